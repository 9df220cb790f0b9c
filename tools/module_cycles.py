#!/usr/bin/env python3
"""Module cycles in dmon's crate: each `use crate::...` or `super::...` outside
comments and test modules is an edge from the file's module to the module it
names (parent and child modules excepted); prints every strongly connected
component of more than one module (Tarjan), largest first, and the edges
inside the largest. Issue 25 wants none left; until the crates are split,
this is how to check.

    python3 tools/module_cycles.py [REPO]      (default: the current directory)
"""
import os, re, sys
from collections import defaultdict
root = sys.argv[1] if len(sys.argv) > 1 else '.'
src = os.path.join(root, 'src')
mods = {}
for dp, dn, fn in os.walk(src):
    for f in fn:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, src)[:-3]
        parts = rel.split('/')
        if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
        mods['::'.join(parts)] = p
def resolve(path):
    # longest module prefix
    segs = path.split('::')
    for i in range(len(segs), 0, -1):
        m = '::'.join(segs[:i])
        if m in mods: return m
    return None
edges = defaultdict(set)
for m, p in mods.items():
    text = open(p).read()
    # strip test modules
    text = re.split(r'#\[cfg\(test\)\]\s*mod tests', text)[0]
    text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
    for u in re.findall(r'crate::([A-Za-z_][A-Za-z0-9_:]*)', text):
        t = resolve(u.rstrip(':'))
        if t and t != m and not m.startswith(t + '::') and not t.startswith(m + '::'):
            edges[m].add(t)
    # super:: references
    for u in re.findall(r'\bsuper::([A-Za-z_][A-Za-z0-9_:]*)', text):
        parent = m.rsplit('::', 1)[0] if '::' in m else ''
        if p.endswith('mod.rs'):
            parent = m.rsplit('::', 1)[0] if '::' in m else ''
        t = resolve((parent + '::' + u).strip(':')) if parent else resolve(u)
        if t and t != m and not m.startswith(t + '::') and not t.startswith(m + '::'):
            edges[m].add(t)
# Tarjan
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in list(mods):
    if v not in idx: sc(v)
for s in sorted(sccs, key=len, reverse=True):
    print(len(s), ' '.join(s))
if not sccs:
    print('no module cycles')
    sys.exit(0)
big = max(sccs, key=len)
for m in sorted(big):
    out = sorted(t for t in edges[m] if t in big)
    print(' ', m, '->', ', '.join(out))
