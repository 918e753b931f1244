"""Print the golden files of tests/c/test_safetensors.c: what the real
`safetensors` package writes for the tensors the C test feeds its writer.
Run it with the project's .venv and paste the output over the golden block
when the test changes: python tests/c/gen_safetensors_golden.py"""

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy


def tensors():
    # In the order the C test gives them (not the order the file has).
    return {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1, -2], np.int8),
        "h": np.array([1.5, -2], ml_dtypes.bfloat16),
        "z": np.zeros((0, 3), np.uint8),
        "s": np.array(7, np.int64),
        "q": np.array([0.5], ml_dtypes.float8_e4m3fn),
        "u": np.array([True]),
        "e\u00e9\n\"": np.array([1, 2], np.uint16),
    }


def c_literal(name, data):
    n = int.from_bytes(data[:8], "little")
    header, body = data[8 : 8 + n].decode(), data[8 + n :]
    esc = header.replace("\\", "\\\\").replace('"', '\\"').encode("utf-8")
    text = "".join(chr(c) if 32 <= c < 127 else f"\\x{c:02x}\"\"" for c in esc)
    lines = [f"/* safetensors {safetensors.__version__}: {len(data)} bytes, a header of {n} */",
             f"static const char {name}_header[] =",
             f'    "{text}";',
             f"static const uint8_t {name}_data[] = {{"]
    for i in range(0, len(body), 16):
        lines.append("    " + ", ".join(f"0x{b:02x}" for b in body[i : i + 16]) + ",")
    lines.append("};")
    return "\n".join(lines)


if __name__ == "__main__":
    t = tensors()
    print(c_literal("golden", safetensors.numpy.save(t, metadata={"format": "pt"})))
    print(c_literal("golden_bare", safetensors.numpy.save({k: t[k] for k in ("s", "w")})))
