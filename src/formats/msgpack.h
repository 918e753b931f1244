/* What the Flax msgpack reader (msgpack.c) and writer (msgpack_sink.c) share. */
#ifndef JP_MSGPACK_H
#define JP_MSGPACK_H

/* Maps and lists nested deeper than this are refused. */
#define JP_MSGPACK_MAX_DEPTH 64

/* flax.serialization's extension types. */
enum { JP_MSGPACK_EXT_NDARRAY = 1, JP_MSGPACK_EXT_COMPLEX = 2, JP_MSGPACK_EXT_SCALAR = 3 };

/* flax.serialization.MAX_CHUNK_SIZE: arrays of more bytes are split into a
 * map of flat chunks, each of at most this many bytes. */
#define JP_MSGPACK_CHUNK_BYTES (1ull << 30)
#define JP_MSGPACK_CHUNK_MARKER "__msgpack_chunked_array__"

#endif /* JP_MSGPACK_H */
