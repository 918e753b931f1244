"""Real architecture pairs, both sides written by someone else: Hugging Face
transformers' PyTorch models and the Flax twins it ships (4.x). Each case
builds the two with one small config, gives the PyTorch side random weights
(so a wrong pairing shows in the outputs), and says how to run each side.

Used by tests/python/test_pairs.py and bench/pairs.py.
"""

import warnings

import numpy as np

warnings.filterwarnings("ignore", message=".*TensorFlow and JAX classes are deprecated.*")

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99)
VISION = {k: v for k, v in SMALL.items() if k != "vocab_size"}
IDS = {"input_ids": np.array([[5, 7, 9, 11, 3, 2]], dtype=np.int64)}
PIXELS = {"pixel_values": np.random.RandomState(0).randn(1, 3, 32, 32).astype(np.float32)}
AUDIO = {"input_values": np.random.RandomState(0).randn(1, 400).astype(np.float32)}
FEATURES = {"input_features": np.random.RandomState(0).randn(1, 16, 40).astype(np.float32)}
DECODER = {"decoder_input_ids": np.array([[0, 4, 6]], dtype=np.int64)}
SEQ2SEQ = dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4, decoder_attention_heads=4,
               encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=99)


def _cases():
    import transformers as tr
    return {
        "bert": (tr.BertConfig(**SMALL), tr.BertModel, tr.FlaxBertModel, IDS),
        "roberta": (tr.RobertaConfig(**SMALL), tr.RobertaModel, tr.FlaxRobertaModel, IDS),
        "xlm-roberta": (tr.XLMRobertaConfig(**SMALL), tr.XLMRobertaModel, tr.FlaxXLMRobertaModel, IDS),
        "distilbert": (tr.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=99),
                       tr.DistilBertModel, tr.FlaxDistilBertModel, IDS),
        "albert": (tr.AlbertConfig(embedding_size=16, **SMALL), tr.AlbertModel, tr.FlaxAlbertModel, IDS),
        "bigbird": (tr.BigBirdConfig(attention_type="original_full", **SMALL), tr.BigBirdModel,
                    tr.FlaxBigBirdModel, IDS),
        "gpt2": (tr.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99), tr.GPT2Model, tr.FlaxGPT2Model, IDS),
        "gpt-neo": (tr.GPTNeoConfig(hidden_size=32, num_layers=2, num_heads=4, vocab_size=99,
                                    attention_types=[[["global", "local"], 1]], window_size=4),
                    tr.GPTNeoModel, tr.FlaxGPTNeoModel, IDS),
        "gpt-j": (tr.GPTJConfig(n_positions=64, n_embd=32, n_layer=2, n_head=4, rotary_dim=4, vocab_size=99),
                  tr.GPTJModel, tr.FlaxGPTJModel, IDS),
        "opt": (tr.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37,
                             vocab_size=99, word_embed_proj_dim=32), tr.OPTModel, tr.FlaxOPTModel, IDS),
        "llama": (tr.LlamaConfig(max_position_embeddings=64, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, intermediate_size=37,
                                 vocab_size=99), tr.LlamaModel, tr.FlaxLlamaModel, IDS),
        "bart": (tr.BartConfig(**SEQ2SEQ), tr.BartModel, tr.FlaxBartModel, IDS),
        # Marian, Pegasus and RoFormer keep a sinusoidal position table that
        # their Flax twins compute: it is left over, and harmless.
        "marian": (tr.MarianConfig(max_position_embeddings=64, decoder_start_token_id=0, pad_token_id=1, **SEQ2SEQ),
                   tr.MarianModel, tr.FlaxMarianModel, {**IDS, **DECODER}),
        "pegasus": (tr.PegasusConfig(max_position_embeddings=64, **SEQ2SEQ), tr.PegasusModel, tr.FlaxPegasusModel,
                    {**IDS, **DECODER}),
        "roformer": (tr.RoFormerConfig(max_position_embeddings=64, **SMALL), tr.RoFormerModel, tr.FlaxRoFormerModel,
                     IDS),
        "whisper": (tr.WhisperConfig(max_source_positions=20, max_target_positions=32, num_mel_bins=16,
                                     pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=0,
                                     **SEQ2SEQ),
                    tr.WhisperModel, tr.FlaxWhisperModel, {**FEATURES, **DECODER}),
        "mistral": (tr.MistralConfig(max_position_embeddings=64, num_key_value_heads=2, **SMALL), tr.MistralModel,
                    tr.FlaxMistralModel, IDS),
        "vit": (tr.ViTConfig(image_size=32, patch_size=8, **VISION), tr.ViTModel, tr.FlaxViTModel, PIXELS),
        "beit": (tr.BeitConfig(image_size=32, patch_size=8, **VISION), tr.BeitModel, tr.FlaxBeitModel, PIXELS),
        "dinov2": (tr.Dinov2Config(image_size=32, patch_size=8, **VISION), tr.Dinov2Model, tr.FlaxDinov2Model,
                   PIXELS),
        "clip-text": (tr.CLIPTextConfig(**SMALL), tr.CLIPTextModel, tr.FlaxCLIPTextModel, IDS),
        "clip-vision": (tr.CLIPVisionConfig(image_size=32, patch_size=8, **VISION), tr.CLIPVisionModel,
                        tr.FlaxCLIPVisionModel, PIXELS),
        "resnet": (tr.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck"),
                   tr.ResNetModel, tr.FlaxResNetModel, PIXELS),
        "regnet": (tr.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8),
                   tr.RegNetModel, tr.FlaxRegNetModel, PIXELS),
        "wav2vec2": (tr.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=37, conv_dim=(8, 8), conv_stride=(5, 2),
                                       conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=4, do_stable_layer_norm=True,
                                       feat_extract_norm="layer"),
                     tr.Wav2Vec2Model, tr.FlaxWav2Vec2Model, AUDIO),
    }


NAMES = ["bert", "roberta", "xlm-roberta", "distilbert", "albert", "bigbird", "gpt2", "gpt-neo", "gpt-j", "opt",
         "llama", "bart", "vit", "beit", "dinov2", "clip-text", "clip-vision", "resnet", "regnet", "wav2vec2",
         "marian", "pegasus", "roformer", "whisper", "mistral"]


class Pair:
    """One case: .torch_model (eval, random weights), .state_dict(),
    .params (the Flax twin's initialised params: the `like` of a
    conversion), .torch_output(), .flax_output(params)."""

    def __init__(self, name):
        import torch
        config, tcls, fcls, inputs = _cases()[name]
        self.name = name
        torch.manual_seed(0)
        self.torch_model = tcls(config).eval()
        with torch.no_grad():
            for p in self.torch_model.parameters():
                if p.requires_grad:  # frozen ones (sinusoidal tables) keep what the model computes
                    p.normal_(0, 0.2)
        self.flax_model = fcls(config)
        self.params = self.flax_model.params
        self.inputs = inputs

    def state_dict(self):
        return self.torch_model.state_dict()

    def torch_output(self):
        import torch
        with torch.no_grad():
            out = self.torch_model(**{k: torch.tensor(v) for k, v in self.inputs.items()})
        return out.last_hidden_state.numpy()

    def flax_output(self, params):
        import jax.numpy as jnp
        out = self.flax_model(**{k: jnp.asarray(v) for k, v in self.inputs.items()}, params=params)
        return np.asarray(out.last_hidden_state)


def relative_error(a, b):
    return float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
