"""The code's layout rules, checked statically (AST, nothing imported): no import cycles between modules
(lazy imports inside functions count too), `lipsync_jax` never imports the offline jobs in
`data_pipelines`, and every module says what it owns in a docstring."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ('lipsync_jax', 'data_pipelines')


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob('*.py'))}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
  """Project modules that `name` imports anywhere in its body (module level or inside functions)."""
  is_package = path.name == '__init__.py'
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      targets = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # relative import
        anchor = name.split('.') if is_package else name.split('.')[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      targets = [base] + [f'{base}.{alias.name}' for alias in node.names]
    else:
      continue
    for target in targets:
      while target and target not in known:  # 'lipsync_jax.media.video.read_audio' -> the module
        target = target.rpartition('.')[0]
      if target and target != name:
        found.add(target)
  return found


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  known = set(modules)
  return {name: _imports(name, path, known) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  state: dict[str, int] = {}  # 1 = on the stack, 2 = done
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_no_import_cycles():
  cycle = _find_cycle(_graph())
  assert cycle is None, f'import cycle: {" -> ".join(cycle)}'


def test_the_library_never_imports_the_offline_jobs():
  offenders = {
    name: sorted(t for t in targets if t.split('.')[0] == 'data_pipelines')
    for name, targets in _graph().items()
    if name.split('.')[0] == 'lipsync_jax'
  }
  offenders = {k: v for k, v in offenders.items() if v}
  assert not offenders, f'lipsync_jax imports data_pipelines: {offenders}'


@pytest.mark.parametrize('name', sorted(_modules()))
def test_every_module_says_what_it_owns(name):
  path = _modules()[name]
  docstring = ast.get_docstring(ast.parse(path.read_text()))
  if path.name == '__init__.py' and not path.read_text().strip():
    pytest.skip('empty package marker')
  assert docstring and len(docstring) > 20, f'{path.relative_to(ROOT)} has no module docstring'


def test_cycle_finder_finds_a_cycle():
  """The checker itself can fail."""
  assert _find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert _find_cycle({'a': {'b'}, 'b': set()}) is None
