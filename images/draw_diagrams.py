"""Draw the diagrams of notebooks 01 and 03 (run: `make images`).

Architectures (01): an input is a rectangle, a hidden activation a circle, an output a
triangle. Arrows are layers: green input -> hidden, orange hidden -> hidden, blue hidden ->
output. Stateful batching (03): the text cut into rows, read a window at a time.
"""
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, Polygon, Rectangle  # noqa: E402

HERE = Path(__file__).resolve().parent
GREEN, ORANGE, BLUE = '#2ca02c', '#ff7f0e', '#1f77b4'


def canvas(width, height):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect('equal')
    ax.axis('off')
    return fig, ax


def box(ax, x, y, text):
    ax.add_patch(Rectangle((x - 0.45, y - 0.3), 0.9, 0.6, fc='#f2f2f2', ec='black'))
    ax.text(x, y, text, ha='center', va='center', fontsize=10)
    return (x, y + 0.3), (x + 0.45, y)


def circle(ax, x, y, text=''):
    ax.add_patch(Circle((x, y), 0.38, fc='white', ec='black'))
    ax.text(x, y, text, ha='center', va='center', fontsize=9)


def triangle(ax, x, y, text):
    ax.add_patch(Polygon([(x - 0.45, y - 0.3), (x + 0.45, y - 0.3), (x, y + 0.4)],
                         fc='#f2f2f2', ec='black'))
    ax.text(x, y - 0.55, text, ha='center', va='top', fontsize=10)


def arrow(ax, start, end, color, label=None, rad=0.0):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle='-|>', mutation_scale=14, lw=2,
                                 color=color, connectionstyle=f'arc3,rad={rad}'))
    if label:
        ax.text((start[0] + end[0]) / 2 + 0.1, (start[1] + end[1]) / 2, label, fontsize=8,
                color=color, ha='left', va='center')


LAYERS = [(GREEN, 'input -> hidden (l_in)'), (ORANGE, 'hidden -> hidden (l_hidden)'),
          (BLUE, 'hidden -> output (l_out)')]


def legend(ax, x, y, layers=LAYERS):
    for i, (color, text) in enumerate(layers):
        arrow(ax, (x, y - 0.35 * i), (x + 0.5, y - 0.35 * i), color)
        ax.text(x + 0.6, y - 0.35 * i, text, va='center', fontsize=8)


def basic_nn():
    fig, ax = canvas(7, 4.2)
    for i, x in enumerate([1, 2.2, 3.4]):
        box(ax, x, 0.7, f'char {i + 1}')
        arrow(ax, (x, 1.0), (2.2, 2.0), GREEN)
    ax.text(2.2, 1.35, 'concatenated embeddings', ha='center', fontsize=8)
    circle(ax, 2.2, 2.4, 'FC')
    arrow(ax, (2.2, 2.8), (2.2, 3.3), BLUE)
    triangle(ax, 2.2, 3.7, '')
    ax.text(2.75, 3.7, 'char 4', va='center', fontsize=10)
    legend(ax, 4.4, 3.6, [LAYERS[0], LAYERS[2]])     # FCModel has no l_hidden
    fig.suptitle('FCModel: three characters in, the fourth out', fontsize=11)
    return fig


def three_char():
    fig, ax = canvas(8, 4.2)
    xs = [1.2, 2.9, 4.6]
    ax.text(0.05, 2.4, '0', ha='center', va='center', fontsize=11)   # the state starts at zero
    for i, x in enumerate(xs):
        box(ax, x, 0.7, f'char {i + 1}')
        arrow(ax, (x, 1.0), (x, 2.0), GREEN)
        circle(ax, x, 2.4)
        start = xs[i - 1] + 0.38 if i else 0.2         # l_hidden runs three times, once per character
        arrow(ax, (start, 2.4), (x - 0.38, 2.4), ORANGE)
    arrow(ax, (xs[-1], 2.8), (xs[-1], 3.3), BLUE)
    triangle(ax, xs[-1], 3.7, '')
    ax.text(xs[-1] + 0.55, 3.7, 'char 4', va='center', fontsize=10)
    legend(ax, 5.6, 1.2)
    fig.suptitle('Char3Model: the same layers reused at every step', fontsize=11)
    return fig


def simple_rnn():
    fig, ax = canvas(6, 4.2)
    box(ax, 1.5, 0.7, 'char n')
    arrow(ax, (1.5, 1.0), (1.5, 2.0), GREEN)
    circle(ax, 1.5, 2.4)
    arrow(ax, (1.85, 2.6), (1.85, 2.2), ORANGE, rad=-2.2)
    ax.text(2.55, 2.4, 'repeat for\neach of the\n8 characters', fontsize=8, va='center')
    arrow(ax, (1.5, 2.8), (1.5, 3.3), BLUE)
    triangle(ax, 1.5, 3.7, '')
    ax.text(2.05, 3.7, 'char n+1', va='center', fontsize=10)
    legend(ax, 3.6, 1.2)
    fig.suptitle('CharLoopModel / CharRNN: a loop over the characters', fontsize=11)
    return fig


def stateful_batches():
    """The text cut into bs = 3 rows, each read bptt = 4 characters per batch; each row's state
    goes on to the next batch, detached."""
    from matplotlib.patches import FancyBboxPatch
    fig, ax = canvas(9.6, 3.6)
    text = 'the text of all the speeches of one presid'   # 3 rows of 14 characters
    rows, width, n_batches = 3, 14, 3
    colors = ['#dbe9f6', '#fde0c5', '#d9f0d3']
    ax.text(0.1, 3.25, 'the stream, cut into rows:', fontsize=9)
    for r in range(rows):
        y = 2.5 - 0.75 * r
        ax.text(0.1, y, f'row {r}', va='center', fontsize=9)
        for b in range(n_batches):
            x0 = 1.0 + b * 2.75
            ax.add_patch(FancyBboxPatch((x0, y - 0.25), 2.2, 0.5, boxstyle='round,pad=0.02',
                                        fc=colors[b], ec='grey'))
            chunk = text[r * width + b * 4: r * width + b * 4 + 4]
            ax.text(x0 + 1.1, y, repr(chunk), ha='center', va='center', family='monospace', fontsize=10)
            if b < n_batches - 1:
                arrow(ax, (x0 + 2.25, y), (x0 + 2.7, y), ORANGE)
        ax.text(1.0 + n_batches * 2.75 - 0.3, y, '...', va='center', fontsize=11)
    for b in range(n_batches):
        ax.text(1.0 + b * 2.75 + 1.1, 0.55, f'batch {b + 1}: x is {rows} x 4', ha='center', fontsize=9)
    ax.text(4.8, 0.1, 'orange: the state of each row goes on to the next batch, detached '
                      '(its values carried, its gradient cut)', ha='center', fontsize=8.5, color=ORANGE)
    fig.suptitle('Stateful batching: bs = 3 rows, bptt = 4 characters per batch', fontsize=11)
    return fig


if __name__ == '__main__':
    for name, draw in [('basic_nn', basic_nn), ('3char', three_char), ('simple_RNN', simple_rnn),
                       ('stateful_batches', stateful_batches)]:
        fig = draw()
        fig.savefig(HERE / f'{name}.png', dpi=100, bbox_inches='tight',
                    metadata={'Software': None})
        plt.close(fig)
        print('wrote', HERE / f'{name}.png')
