"""`make mutate`'s score: what share of mutmut's mutants of the shared code the unit tests kill.

    .venv/bin/mutmut results --all true | python tests/mutation_score.py [GLOB ...]

Reads mutmut's results (one ``name: status`` per line) and tests/mutmut-equivalents.md (the
mutants no test can tell apart from the real code, each with its reason). Prints, per function
and in all, the mutants killed (a test failed; a timeout or a crash of the tests' process, a
segfault, counts as killed: the tests noticed; but a listed equivalent that timed out stays an
equivalent, its timeout being mutmut's CPU-time limit, not a test),
the equivalents, and every other survivor by name: those are gaps in the tests. The score is
killed / (mutants - equivalents); CONTRIBUTING.md cites it. Exits 1 if any mutant was not checked."""
import fnmatch
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

EQUIVALENTS = Path(__file__).with_name('mutmut-equivalents.md')


def equivalents(path=EQUIVALENTS):
    """The mutant names listed in ``path``, as ``- `name`: reason`` lines."""
    return set(re.findall(r'^- `([^`]+)`', path.read_text(), flags=re.M)) if path.exists() else set()


def function_of(name):
    return name.rsplit('__mutmut_', 1)[0]


def main(lines, globs):
    results = {}
    for line in lines:
        if ':' in line:
            name, status = (part.strip() for part in line.rsplit(':', 1))
            if not globs or any(fnmatch.fnmatchcase(name, g) for g in globs):
                results[name] = status
    listed = equivalents()
    per_function = defaultdict(Counter)
    gaps = []
    for name, status in sorted(results.items()):
        if status in ('killed', 'segfault') or (status == 'timeout' and name not in listed):
            kind = 'killed'
        elif name in listed:        # a listed equivalent that timed out: the limit, not the tests
            kind = 'equivalent'
        else:
            kind = status
            gaps.append(f'{name}: {status}')
        per_function[function_of(name)][kind] += 1
    total = Counter()
    print(f'{"function":<52} {"mutants":>7} {"killed":>6} {"equiv.":>6} {"other":>5}')
    for function, counts in sorted(per_function.items()):
        total.update(counts)
        n = sum(counts.values())
        print(f'{function:<52} {n:>7} {counts["killed"]:>6} {counts["equivalent"]:>6} '
              f'{n - counts["killed"] - counts["equivalent"]:>5}')
    n = sum(total.values())
    scored = n - total['equivalent']
    print(f'\n{n} mutants: {total["killed"]} killed, {total["equivalent"]} equivalent '
          f'(tests/mutmut-equivalents.md), {scored - total["killed"]} other')
    if scored:
        print(f'score: {total["killed"]} / {scored} = {total["killed"] / scored:.1%} of the '
              f'non-equivalent mutants killed ({total["killed"] / n:.1%} of all)')
    stale = listed - set(results)
    if stale and not globs:
        print(f'listed as equivalent but not among the results: {", ".join(sorted(stale))}')
    if gaps:
        print('\nnot killed and not listed as equivalent:')
        print('\n'.join(f'  {g}' for g in gaps))
    return 1 if total['not checked'] else 0


if __name__ == '__main__':
    sys.exit(main(sys.stdin.read().splitlines(), sys.argv[1:]))
