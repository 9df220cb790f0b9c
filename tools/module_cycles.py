#!/usr/bin/env python3
"""Module cycles in each of dmon's crates (the compiler rules out cycles
between crates): each `use crate::...` or `super::...` outside comments and
test modules is an edge from the file's module to the module it names.
Checked twice per crate:
- by module, parent and child excepted (a parent declares its children);
- by top-level module, a module standing for all its descendants (so a
  child's path back to where its parent came from counts).
Prints every strongly connected component of more than one module
(Tarjan), largest first, and the edges inside the largest; exits 1 if any.

    python3 tools/module_cycles.py [REPO]      (default: the current directory)
"""
import os, re, sys
from collections import defaultdict
root = sys.argv[1] if len(sys.argv) > 1 else '.'
CRATES = ['src'] + sorted(os.path.join('crates', c, 'src') for c in os.listdir(os.path.join(root, 'crates')))
found_any = False

def check(src, top_level):
  global found_any
  mods = {}
  for dp, dn, fn in os.walk(src):
      for f in fn:
          if not f.endswith('.rs'): continue
          p = os.path.join(dp, f)
          rel = os.path.relpath(p, src)[:-3]
          parts = rel.split('/')
          if parts[-1] in ('mod', 'lib', 'main'): parts = parts[:-1]
          # A file of tests (`mod tests;`) is test code, as `mod tests {}` is.
          if parts and parts[-1] == 'tests': continue
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
  if top_level:
      collapsed = defaultdict(set)
      for m, targets in list(edges.items()):
          for t in targets:
              a, b = m.split('::')[0], t.split('::')[0]
              if a != b:
                  collapsed[a].add(b)
      edges = collapsed
      mods = {m.split('::')[0]: None for m in mods}
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
  how = 'by top-level module' if top_level else 'by module'
  if not sccs:
      print(f'{src}: no module cycles ({how}, {len(mods)} modules)')
      return
  found_any = True
  print(f'{src}: module cycles ({how}):')
  for s in sorted(sccs, key=len, reverse=True):
      print(len(s), ' '.join(s))
  big = max(sccs, key=len)
  for m in sorted(big):
      out = sorted(t for t in edges[m] if t in big)
      print(' ', m, '->', ', '.join(out))

for src in CRATES:
    for top_level in (False, True):
        check(os.path.join(root, src), top_level)
sys.exit(1 if found_any else 0)
