"""The package's import graph: data flows one way, so no module imports back.

Every ``import`` statement counts, also those inside functions (a lazy import
hides a circle from Python, not from the design). Importing a package's
submodule (``from nst_jax.fast import network``) is an edge to that submodule
only: Python runs the package's ``__init__`` first, which only re-exports.
"""

import ast
import os

import nst_jax

PACKAGE_DIR = os.path.dirname(nst_jax.__file__)


def _modules() -> dict[str, str]:
  """``{dotted name: path}`` of every module of the package."""
  out = {}
  for root, _, files in os.walk(PACKAGE_DIR):
    for f in files:
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PACKAGE_DIR))
        name = rel[:-3].replace(os.sep, '.')
        out[name[:-len('.__init__')] if name.endswith('.__init__') else name] = \
            os.path.join(root, f)
  return out


def import_graph() -> dict[str, set[str]]:
  """``{module: modules of the package it imports}`` (function bodies included)."""
  modules = _modules()
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets = [f'{node.module}.{a.name}' if f'{node.module}.{a.name}' in modules
                   else node.module for a in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def _cycle(graph):
  """One import circle as a list of modules, or None."""
  state, stack = {}, []

  def visit(n):
    state[n] = 'open'
    stack.append(n)
    for m in sorted(graph[n]):
      if state.get(m) == 'open':
        return stack[stack.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    state[n] = 'done'
    stack.pop()
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_the_import_graph_has_no_circle():
  graph = import_graph()
  assert 'nst_jax.objective' in graph and 'nst_jax.tiling' in graph['nst_jax.objective']
  cycle = _cycle(graph)
  assert cycle is None, ' -> '.join(cycle)


def test_the_cycle_finder_finds_one():
  """The check above would fail on a circle (also through function-level imports)."""
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) is None


def test_the_engine_reaches_the_objective_only():
  """The engine computes losses through the objective, which alone chooses
  tiled or untiled evaluation."""
  graph = import_graph()
  assert 'nst_jax.tiling' not in graph['nst_jax.engine']
  assert 'nst_jax.objective' not in graph['nst_jax.tiling']
  assert 'nst_jax.plan' in graph['nst_jax.inputs']
  assert 'nst_jax.inputs' not in graph['nst_jax.plan']


def test_applying_a_fast_network_needs_no_training_code():
  """The model file format is its own module: apply reads it, train writes it."""
  graph = import_graph()
  assert 'nst_jax.fast.model_file' in graph['nst_jax.fast.apply']
  assert 'nst_jax.fast.model_file' in graph['nst_jax.fast.train']
  assert 'nst_jax.fast.train' not in graph['nst_jax.fast.apply']
  assert 'nst_jax.fast.train' not in graph['nst_jax.fast.model_file']
