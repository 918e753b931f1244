"""Build step: an HTML file as a C header holding it as one NUL-terminated
char array (align_page_html), so the jaxport binary serves the page without
files. Bytes, not a string literal: ISO C bounds a literal's length."""
import sys

src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read() + b"\0"
rows = [", ".join(str(b) for b in data[i:i + 24]) for i in range(0, len(data), 24)]
with open(dst, "w", encoding="ascii") as f:
    f.write(f"/* Made from {src.rsplit('/', 1)[-1]} by embed_page.py at build time. */\n")
    f.write("static const char align_page_html[] = {\n    " + ",\n    ".join(rows) + "};\n")
