#!/usr/bin/env bash
# Prints the path of a Python 3.12 interpreter (the GPU machine's version), or exits 1 saying none was found.
for c in "${PYTHON312:-}" python3.12 "$HOME/.pyenv/versions/3.12"*/bin/python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 \
         /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$c" ] || continue
    p=$(command -v "$c" 2>/dev/null) || continue
    if "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then echo "$p"; exit 0; fi
done
echo "no Python 3.12 found (set PYTHON312=/path/to/python3.12)" >&2
exit 1
