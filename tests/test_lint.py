"""pyflakes over the code of the series: utils, the scripts, the tests and every notebook's cells,
so that unused imports and undefined names do not come back."""
import json
import re
from pathlib import Path

import pytest
from pyflakes.api import check
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([ROOT / 'utils.py', ROOT / 'corpus.py', ROOT / 'checkpoints.py', ROOT / 'awd_lstm.py', ROOT / 'train_full.py', ROOT / 'conftest.py',
                  ROOT / 'images' / 'draw_diagrams.py', ROOT / 'docs' / 'generate.py', *ROOT.glob('tests/*.py')])
NOTEBOOKS = sorted(ROOT.glob('notebooks/*.ipynb'))


def notebook_code(path):
    """A notebook's code cells as one module (IPython magics and shell lines commented out)."""
    cells = json.loads(path.read_text())['cells']
    lines = []
    for cell in cells:
        if cell['cell_type'] == 'code':
            src = ''.join(cell['source'])
            lines += ['# ' + l if l.lstrip().startswith(('%', '!')) else l for l in src.splitlines()]
            lines.append('')
    return '\n'.join(lines) + '\n'


def flakes(code, name, allowed=()):
    """pyflakes' complaints about ``code``, but for ``'X' imported but unused`` of the names in
    ``allowed``."""
    import io
    out, err = io.StringIO(), io.StringIO()
    check(code, name, Reporter(out, err))
    lines = (out.getvalue() + err.getvalue()).strip().splitlines()
    return '\n'.join(line for line in lines
                     if not any(line.endswith(f"'{n}' imported but unused") for n in allowed))


@pytest.mark.parametrize('path', SOURCES + NOTEBOOKS, ids=lambda p: p.name)
def test_pyflakes_is_clean(path):
    code = notebook_code(path) if path.suffix == '.ipynb' else path.read_text()
    assert flakes(code, path.name, allowed=REEXPORTS.get(path.name, ())) == ''


#: Names a module imports only for others to import from it: utils passes on what the
#: notebooks use of corpus.py and checkpoints.py, so that they import from one module.
REEXPORTS = {'utils.py': ('corpus.CORPUS_FOLDER', 'corpus.DATA_DIR', 'corpus.preprocess_speech',
                          'checkpoints.load_checkpoint', 'checkpoints.save_checkpoint')}


@pytest.mark.parametrize('module', ['corpus.py', 'checkpoints.py'])
def test_the_plumbing_modules_import_no_module_of_the_project(module):
    # one direction only: utils passes on what it needs of them, never the other way round
    import ast
    project = {path.stem for path in ROOT.glob('*.py')}
    tree = ast.parse((ROOT / module).read_text())
    imported = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & project, imported & project


def test_the_linter_finds_what_it_should():
    assert 'imported but unused' in flakes('import os\n', 'x.py')
    assert flakes('from os import sep\n', 'x.py', allowed=('os.sep',)) == ''
    assert 'imported but unused' in flakes('from os import sep, name\n', 'x.py', allowed=('os.sep',))
    assert "undefined name 'nope'" in flakes('print(nope)\n', 'x.py')


def hidden_inputs(code):
    """Functions of ``code`` (a notebook's cells as one module) that read a module-level name
    they were not given: not an argument, not imported, not a function or class of the module,
    not a builtin and not an UPPER_CASE constant. Returns ``{function: sorted names}``."""
    import builtins
    import symtable
    top = symtable.symtable(code, 'notebook', 'exec')
    allowed = set(dir(builtins))
    for name in top.get_identifiers():
        sym = top.lookup(name)
        if sym.is_imported() or name.isupper() or (sym.is_namespace() and not sym.is_assigned()):
            allowed.add(name)
    inline = {'lambda', 'listcomp', 'dictcomp', 'setcomp', 'genexpr'}   # run where they stand
    defined = [child for child in top.get_children() if child.get_name() not in inline]
    allowed.update(child.get_name() for child in defined)   # def f / class C at module level
    found = {}

    def visit(table, owner):
        if table.get_type() == 'function':
            for name in table.get_identifiers():
                sym = table.lookup(name)
                if sym.is_global() and sym.is_referenced() and name not in allowed:
                    found.setdefault(owner, set()).add(name)
        for child in table.get_children():
            visit(child, owner)

    for child in defined:
        visit(child, child.get_name())
    return {f: sorted(names) for f, names in found.items()}


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_functions_take_what_they_use(path):
    # a cell copied into another notebook must not depend on this notebook's variables
    assert hidden_inputs(notebook_code(path)) == {}


def test_hidden_inputs_are_found():
    code = ('import numpy as np\nSIZE = 3\nvocab = [1]\n'
            'def ok(v):\n    return np.sum(v) + SIZE + len(v) + helper()\n'
            'def helper():\n    return 1\n'
            'def bad():\n    return len(vocab)\n'
            'class M:\n    def forward(self):\n        return vocab\n')
    assert hidden_inputs(code) == {'bad': ['vocab'], 'M': ['vocab']}


def _notebooks_using(name):
    """The numbers of the notebooks whose code imports ``name`` from utils or calls ``utils.name``."""
    found = []
    for path in NOTEBOOKS:
        code = notebook_code(path)
        imported = set()
        for group, line in re.findall(r'from utils import \(([^)]*)\)|from utils import ([^\n]*)', code):
            imported |= {word.strip() for word in (group or line).replace('\n', ' ').split(',')}
        imported |= set(re.findall(r'\butils\.(\w+)', code))
        if name in imported:
            found.append(path.name[:2])
    return found


def test_utils_docstring_says_which_notebooks_use_each_public_name():
    import ast
    import utils
    table = re.search(r'\n    name +notebooks\n((?:    \w+ +[\d ]+\n)+)', utils.__doc__)
    assert table, "utils' docstring has lost its table of names and notebooks"
    listed = {line.split()[0]: line.split()[1:] for line in table.group(1).splitlines()}
    others = re.search(r'The other public names serve [^:]*:\s+([^.]*)\.', utils.__doc__)
    assert others, "utils' docstring no longer lists the names no notebook uses"
    unused = {word.strip() for word in others.group(1).replace('\n', ' ').split(',')}
    tree = ast.parse((ROOT / 'utils.py').read_text())
    public = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    public |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
               if isinstance(t, ast.Name)}
    public |= {alias.name for node in tree.body if isinstance(node, ast.ImportFrom)     # passed on
               and node.module in ('corpus', 'checkpoints') for alias in node.names}
    public = {name for name in public if not name.startswith('_')}
    assert set(listed) | unused == public and not set(listed) & unused
    for name in public:
        assert _notebooks_using(name) == listed.get(name, []), name


#: The constants each page's header sets alike (its configuration and corpus). Any other
#: upper-case name set in two notebooks or scripts would mean two things there, as ``CELLS``
#: (notebook 05's layers, train_full.py's models) and ``LENGTHS`` (05's strings, 06's passages) did.
HEADER_NAMES = {'CONFIGURATION', 'FULL_CONFIG', 'CHECK_RESULTS', 'CORPUS', 'FULL_CORPUS'}


def _constants_set(code):
    """The upper-case names a module assigns (``=``, with or without an annotation) outside functions
    and classes, inside the bodies of ``if``, ``for``, ``while``, ``with`` and ``try`` (its handlers
    included) too; loop targets and ``+=`` are not counted."""
    import ast
    names, todo = set(), list(ast.parse(code).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and n.id.isupper() and len(n.id) > 1}
        todo += [child for child in ast.iter_child_nodes(node) if isinstance(child, (ast.stmt, ast.excepthandler))]
    return names


def test_no_constant_name_means_two_things():
    files = {path.name: notebook_code(path) for path in NOTEBOOKS}
    files |= {name: (ROOT / name).read_text() for name in ('utils.py', 'corpus.py', 'awd_lstm.py', 'train_full.py')}
    where = {}
    for name, code in files.items():
        for constant in _constants_set(code):
            where.setdefault(constant, []).append(name)
    shared = {constant: names for constant, names in where.items() if len(names) > 1}
    assert set(shared) <= HEADER_NAMES, {c: n for c, n in shared.items() if c not in HEADER_NAMES}


def test_the_constants_check_finds_a_name_set_twice():
    code = ('CELLS = {}\nx = 1\nA, LENGTHS = 1, [2]\nif x:\n    CONFIG = 1\nelse:\n    CONFIG = 2\n'
            'try:\n    pass\nexcept ValueError:\n    FALLBACK = 1\ndef f():\n    LOCAL = 1\n')
    assert _constants_set(code) == {'CELLS', 'LENGTHS', 'CONFIG', 'FALLBACK'}


def test_one_spelling_for_the_character_indices():
    # ids, itos and stoi (CONTRIBUTING.md); the original's part 1 said idxs, idx2char and char2idx
    other = re.compile(r'\b(idxs|idx2char|char2idx)\b')
    for path in SOURCES + NOTEBOOKS:
        if path.name != Path(__file__).name:
            code = notebook_code(path) if path.suffix == '.ipynb' else path.read_text()
            assert not other.search(code), (path.name, other.search(code).group())


def test_utils_stays_small_with_the_teaching_code_first():
    # the bounds: a learner opening utils.py meets the vocabulary, the loaders and fit in
    # a teaching half of at most 600 lines, then the plumbing, and no download code at all
    lines = (ROOT / 'utils.py').read_text().splitlines()
    banner = next(i for i, line in enumerate(lines) if line.startswith('# ====='))
    defined = {re.match(r'(?:class|def) (\w+)', line).group(1): i
               for i, line in enumerate(lines) if re.match(r'(?:class|def) \w+', line)}
    assert banner <= 600 and len(lines) <= 1000, (banner, len(lines))   # banner: lines above it
    assert all(defined[name] < banner for name in ('CharVocab', 'LanguageModelLoader', 'fit'))
    assert not any(re.search(r'\brequests\b|zipfile|def get_data', line) for line in lines)


@pytest.mark.parametrize('path', NOTEBOOKS, ids=lambda p: p.name)
def test_the_prose_reads_in_short_sentences(path):
    # tests/prose_stats.py's measures: a learner can follow a 20-word sentence, not a 100-word one
    from prose_stats import measure
    m = measure(path)
    assert m['mean sentence'] <= 22 and m['longest'] <= 60 and m['over 40 words'] <= 3, m
    assert m['opening cell'] <= 200, m['opening cell']


def test_the_prose_measure_splits_sentences_and_leaves_code_out():
    from prose_stats import sentences
    text = ('# A heading is left out\nOne two three. Four five?\n\n- a list item\n- another one\n\n'
            '```python\nx = 1. y = 2\n```\n| a | table |\nAt $x^2 + 1$ it ends.')
    assert [' '.join(s) for s in sentences(text)] == [
        'One two three.', 'Four five?', 'a list item', 'another one', 'At x it ends.']
