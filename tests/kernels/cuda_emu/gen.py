#!/usr/bin/env python3
# Rewrites one CUDA source of aji's backend (src/aji/kernels/cuda/*.cu) into host C++ for the
# CUDA emulator (README.md): prelude.h first, dynamic shared memory from the emulator, and every
# kernel<<<grid, block, smem, stream>>>(args); as emu_launch(grid, block, smem, [&] { kernel(args); });
# Usage: gen.py IN.cu OUT.cpp. Run at build time (tests/CMakeLists.txt); never edit the output.
import re
import sys

src_path, out_path = sys.argv[1], sys.argv[2]
src = open(src_path).read()
src = src.replace('#include <cuda_runtime.h>', '')
src = src.replace('extern __shared__ float smem[];', 'float* smem = emu_smem();')
# cudaFuncSetAttribute(max dynamic shared memory) calls: the emulator checks the size itself.
src = re.sub(r'^[ \t]*set_smem\([^;]*\);[ \t]*$', '', src, flags=re.M)


def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '([{':
            depth += 1
        if ch in ')]}':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


out = '// GENERATED from %s by tests/kernels/cuda_emu/gen.py: host emulation, do not edit.\n' % src_path
out += '#include "prelude.h"\n#line 1 "%s"\n' % src_path
pos = 0
n = 0
while True:
    i = src.find('<<<', pos)
    if i < 0:
        out += src[pos:]
        break
    m = re.search(r'(\w+(?:<\w+>)?)\s*$', src[pos:i])
    if not m:
        sys.exit('gen.py: cannot find the kernel name before <<< in %s' % src_path)
    name_start = pos + m.start(1)
    name = m.group(1)
    j = src.find('>>>', i)
    cfg = [c.replace('\n', ' ') for c in split_top(src[i + 3:j])]
    if len(cfg) != 4:
        sys.exit('gen.py: %s: a launch must give grid, block, smem and stream: %s' % (src_path, cfg))
    k = j + 3
    if src[k] != '(':
        sys.exit('gen.py: %s: expected ( after >>>' % src_path)
    depth = 0
    e = k
    while True:
        if src[e] == '(':
            depth += 1
        elif src[e] == ')':
            depth -= 1
            if depth == 0:
                break
        e += 1
    args = src[k + 1:e]
    if src[e + 1] != ';':
        sys.exit('gen.py: %s: expected ; after a launch' % src_path)
    # keep the line count (the #line above then points errors at the .cu)
    nl = src[name_start:e + 2].count('\n')
    out += src[pos:name_start]
    out += 'emu_launch(dim3(%s), dim3(%s), (size_t)(%s), [&] { %s(%s); });' % (
        cfg[0], cfg[1], cfg[2], name, args.replace('\n', ' '))
    out += '\n' * nl
    pos = e + 2
    n += 1
with open(out_path, 'w') as f:
    f.write(out)
