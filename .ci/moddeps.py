#!/usr/bin/env python3
"""Checks that the top-level modules of node/src depend on each other one way, with no cycles.

A top-level module is `foo.rs` plus its `foo/` directory. It depends on module `bar` when its
code (outside `//` comments and before `#[cfg(test)]`) names `crate::bar`, directly or in a
`use crate::{...}` group. Prints each module's dependencies, then every pair in a cycle; exits 1
if there is any. The intended order is in node/src/lib.rs and docs/architecture.md.

Usage: .ci/moddeps.py [node/src]
"""
import os
import re
import sys
from collections import defaultdict


def dependencies(root):
    mods = [f[:-3] for f in os.listdir(root)
            if f.endswith('.rs') and f not in ('lib.rs', 'main.rs')]
    deps = defaultdict(set)
    for m in mods:
        files = [os.path.join(root, m + '.rs')]
        if os.path.isdir(os.path.join(root, m)):
            for dp, _, fs in os.walk(os.path.join(root, m)):
                files += [os.path.join(dp, f) for f in fs if f.endswith('.rs')]
        for f in files:
            with open(f, encoding='utf-8') as fh:
                lines = fh.read().split('\n')
            src = '\n'.join(l for l in lines if not l.strip().startswith('//'))
            idx = src.find('#[cfg(test)]')
            if idx >= 0:
                src = src[:idx]
            named = set(re.findall(r'crate::(\w+)', src))
            for grp in re.findall(r'crate::\{([^}]*)\}', src, re.S):
                named |= set(re.findall(r'(?:^|[,{\s])(\w+)', grp))
            deps[m] |= {d for d in named if d != m and d in mods}
    return sorted(mods), deps


def reach(deps, a):
    seen, stack = set(), [a]
    while stack:
        for y in deps[stack.pop()]:
            if y not in seen:
                seen.add(y)
                stack.append(y)
    return seen


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else 'node/src'
    mods, deps = dependencies(root)
    for m in mods:
        print(m, '->', sorted(deps[m]))
    cycles = [(a, b) for a in mods for b in sorted(deps[a]) if a in reach(deps, b)]
    print('cycles:')
    for a, b in cycles:
        print(' ', a, '<->', b)
    if cycles:
        print('module dependencies must go one way: see the layering in node/src/lib.rs',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
