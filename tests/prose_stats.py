"""How the notebooks' prose reads: words, sentence lengths and the opening cell, per notebook.

    python tests/prose_stats.py                 # every notebook
    python tests/prose_stats.py notebooks/08_regularising_the_lstm.ipynb --long 40

Measured on the markdown cells, with code blocks, formulas, headings and tables left out. A
sentence ends at '.', '!' or '?' before a space and a capital, a digit, a quote or a bracket, or
at the end of a list item or paragraph. ``--long N`` prints each sentence over N words.
"""
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def prose(markdown):
    """The running text of one markdown cell: no code blocks, formulas, headings or tables."""
    text = re.sub(r'```.*?```', ' ', markdown, flags=re.S)
    text = re.sub(r'\$\$.*?\$\$', ' ', text, flags=re.S)
    text = re.sub(r'\$[^$\n]+\$', 'x', text)
    lines = [line for line in text.splitlines() if not re.match(r'\s*(#|\|)', line)]
    return '\n'.join(lines)


def sentences(markdown):
    """The sentences of one markdown cell, each as a list of words."""
    out = []
    for block in re.split(r'\n\s*\n|\n(?=\s*(?:[-*]|\d+\.)\s)', prose(markdown)):
        block = ' '.join(block.split())
        for sentence in re.split(r'(?<=[.!?])\s+(?=[A-Z0-9"`(\[*_])', block):
            words = [w for w in sentence.split() if re.search(r'\w', w)]
            if words:
                out.append(words)
    return out


def measure(path):
    cells = [''.join(c['source']) for c in json.loads(Path(path).read_text())['cells']
             if c['cell_type'] == 'markdown']
    every = [s for cell in cells for s in sentences(cell)]
    lengths = [len(s) for s in every]
    return {'words': sum(lengths), 'mean sentence': round(statistics.mean(lengths), 1),
            'longest': max(lengths), 'over 40 words': sum(n > 40 for n in lengths),
            'opening cell': sum(len(s) for s in sentences(cells[0])), 'sentences': every}


def main(argv):
    long = int(argv[argv.index('--long') + 1]) if '--long' in argv else None
    paths = [a for a in argv if a.endswith('.ipynb')] or sorted(ROOT.glob('notebooks/*.ipynb'))
    print('| notebook | words | mean sentence | longest | over 40 words | opening cell |')
    print('|---|---|---|---|---|---|')
    for path in paths:
        m = measure(path)
        print(f"| {Path(path).name[:2]} | {m['words']:,} | {m['mean sentence']} | {m['longest']} "
              f"| {m['over 40 words']} | {m['opening cell']} |")
        if long is not None:
            for s in m['sentences']:
                if len(s) > long:
                    print(f'    {len(s)}: {" ".join(s)}')


if __name__ == '__main__':
    main(sys.argv[1:])
