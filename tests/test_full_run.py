"""The full run (train_full.py): resume, schedule, shipping, run names, the numeric path; the
regularised LSTM's own pieces are tests/test_awd_lstm.py."""
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import checkpoints
import corpus
import train_full
import utils
from helpers import CONFIG, text_ids, train_small

BF16 = train_full.bf16_lstm_supported()


@pytest.mark.parametrize('cell', ['lstm', 'gru'])
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, cell):
    _, whole, whole_record = train_small(tmp_path / 'a.pt', cell=cell)
    _, first, _ = train_small(tmp_path / 'b.pt', stop_after=1, cell=cell)
    assert len(first.epoch) == 1
    model, resumed, record = train_small(tmp_path / 'b.pt', cell=cell)
    assert resumed.epoch == [0, 1, 2]
    assert resumed.batch_loss == whole.batch_loss          # dropout and all, bit for bit
    assert resumed.train_loss == whole.train_loss          # the moving average went on
    assert resumed.valid_loss == whole.valid_loss
    assert len(record['epochs']) == 3 and len(whole_record['epochs']) == 3
    assert record['wall_seconds'] == pytest.approx(sum(e['seconds'] for e in record['epochs']))
    again, _, _ = train_small(tmp_path / 'b.pt', cell=cell)      # finished: nothing more to do
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(),
                                                 model.state_dict().values()))


def test_the_resume_continues_the_moving_average_of_the_train_loss(tmp_path):
    # if the resumed call started a fresh average, its first epoch's figure would be the
    # debiased average of that epoch's batches alone
    _, _, _ = train_small(tmp_path / 's.pt', stop_after=1)
    _, resumed, _ = train_small(tmp_path / 's.pt', stop_after=2)
    fresh = utils.smooth(resumed.batch_loss[len(resumed.batch_loss) // 2:])[-1]
    continued = utils.smooth(resumed.batch_loss)[-1]
    assert resumed.train_loss[1] == pytest.approx(continued, rel=1e-9)
    assert abs(fresh - continued) > 1e-6                   # the two differ, so the check bites


def _no_delete(message):
    return 'delete' not in message.lower() and 'Move it aside' in message


def test_resume_refuses_another_configuration_naming_the_key(tmp_path):
    train_small(tmp_path / 's.pt', stop_after=1)
    with pytest.raises(train_full.StateMismatch, match=r"config 'lr': 0\.01 in the state, 0\.001 now") as e:
        train_small(tmp_path / 's.pt', config=dict(CONFIG, lr=1e-3))
    assert _no_delete(str(e.value))
    with pytest.raises(train_full.StateMismatch, match="cell: 'lstm' in the state, 'gru' now"):
        train_small(tmp_path / 's.pt', cell='gru')


def test_resume_refuses_another_text_and_another_vocabulary(tmp_path):
    vocab = list('abcdefghijkl')
    train_small(tmp_path / 's.pt', stop_after=1, vocab=vocab)
    other = text_ids(1200, seed=5)                             # same characters, another text
    with pytest.raises(train_full.StateMismatch, match="text 'train'") as e:
        train_small(tmp_path / 's.pt', train_ids=other, vocab=vocab)
    assert 'valid' not in str(e.value).split('differs in')[1]     # only what differs is named
    with pytest.raises(train_full.StateMismatch, match="text 'valid'"):
        train_small(tmp_path / 's.pt', valid_ids=text_ids(400, seed=9), vocab=vocab)
    with pytest.raises(train_full.StateMismatch, match="text 'vocab': 'abcdefghijkl' in the state, 'abcdefghijkm' now"):
        train_small(tmp_path / 's.pt', vocab=list('abcdefghijkm'))
    _, history, _ = train_small(tmp_path / 's.pt', vocab=vocab)  # the right text still resumes
    assert history.epoch == [0, 1, 2]


def test_a_bad_state_folder_is_refused_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setattr(train_full, 'fit', lambda *a, **k: pytest.fail('trained first'))
    a_file = tmp_path / 'file'
    a_file.write_text('x')
    with pytest.raises(NotADirectoryError, match='is a file, not a folder'):
        train_small(a_file / 's.pt')
    read_only = tmp_path / 'ro'
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.access(read_only, os.W_OK):                      # root ignores the mode bits
        read_only = Path('/proc/self')
    with pytest.raises(PermissionError, match='is not writable'):
        train_small(read_only / 's.pt')
    with pytest.raises(SystemExit, match='is a file, not a folder'):
        train_full.main(['lstm', '--tiny', '--state-dir', str(a_file)])


def test_a_rerun_removes_what_a_killed_save_left(tmp_path):
    train_small(tmp_path / 's.pt', stop_after=1)
    stale = tmp_path / 's.pt.k3j2x.tmp'                    # the name save_checkpoint gives
    stale.write_bytes(b'half a state')
    other = tmp_path / 'other.pt.k3j2x.tmp'                # another file's: not ours to remove
    other.write_bytes(b'x')
    _, history, _ = train_small(tmp_path / 's.pt', stop_after=2)
    assert not stale.exists() and other.exists() and history.epoch == [0, 1]


def test_a_run_that_moves_records_where_each_epoch_ran(tmp_path, monkeypatch, capsys):
    train_small(tmp_path / 's.pt', stop_after=1)
    monkeypatch.setattr(train_full, '_hardware', lambda: 'another machine, 8 threads')
    amp = 'bfloat16' if BF16 else None
    train_full.train('lstm', text_ids(1200), text_ids(400, seed=1), 12, CONFIG, tmp_path / 's.pt',
                     stop_after=2, amp=amp)
    out = capsys.readouterr().out
    assert 'this run moves: epochs 0 in fp32 on' in out
    assert f'continues in {train_full.numeric_path(amp)} on another machine, 8 threads' in out
    _, _, record = train_small(tmp_path / 's.pt', amp=amp)
    places = [(e['hardware'], e['amp']) for e in record['epochs']]
    assert places[0][0] != 'another machine, 8 threads'
    assert places[1:] == [('another machine, 8 threads', amp)] * 2


def test_a_rerun_of_a_finished_run_keeps_where_it_was_trained(tmp_path, monkeypatch):
    model, history, record = train_small(tmp_path / 's.pt')
    trained_on = record['epochs'][0]['hardware']
    monkeypatch.setattr(train_full, '_hardware', lambda: 'the machine that reruns')
    model, history, record = train_small(tmp_path / 's.pt')     # nothing left to train
    train_full.ship('lstm', model, history, record, utils.CharVocab('abcdefghijkl'),
                    text_ids(400, seed=1), CONFIG, tmp_path / 'ship.pt')
    ck = torch.load(tmp_path / 'ship.pt', weights_only=True)
    assert ck['hardware'] == trained_on and len(ck['epochs']) == 3
    assert all(e['hardware'] == trained_on for e in ck['epochs'])


def test_each_epoch_trains_under_the_autocast_and_clip_it_was_given(tmp_path, monkeypatch, capsys):
    # on any CPU: fit is watched for what it is asked for, then run in fp32 (an AVX2-only CPU
    # cannot run the LSTM in bf16; test_bf16_autocast_trains_close_to_fp32 runs it where it can)
    asked, real_fit = [], train_full.fit
    monkeypatch.setattr(train_full, 'fit', lambda *a, **k: (asked.append((k['amp_dtype'], k['clip'])),
                                                            real_fit(*a, **dict(k, amp_dtype=None)))[1])
    train_small(tmp_path / 's.pt', stop_after=1, amp='bfloat16', clip=0.5, verbose=True)
    assert 'in bfloat16 autocast' in capsys.readouterr().out.split('\n')[0]
    train_small(tmp_path / 's.pt', stop_after=2, amp=None)
    _, _, record = train_small(tmp_path / 's.pt', amp='bfloat16', verbose=True)     # back where it began
    assert 'it continues in bfloat16 autocast on' in capsys.readouterr().out
    assert asked == [(torch.bfloat16, 0.5), (None, None), (torch.bfloat16, None)]
    assert [(e['amp'], e['clip']) for e in record['epochs']] == [('bfloat16', 0.5), (None, None), ('bfloat16', None)]
    _, _, record = train_small(tmp_path / 'c.pt', stop_after=1, config=dict(CONFIG, clip=0.25))
    assert asked[-1] == (None, 0.25) and record['epochs'][0]['clip'] == 0.25    # a clipped run's own clip


@pytest.mark.skipif(not BF16, reason='this CPU cannot run an LSTM in bf16 (no avx512_bf16 or AMX)')
def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    _, fp32, _ = train_small(tmp_path / 'a.pt')
    _, bf16, record = train_small(tmp_path / 'b.pt', amp='bfloat16')
    assert {e['amp'] for e in record['epochs']} == {'bfloat16'}
    assert bf16.batch_loss != fp32.batch_loss              # another numeric path really ran
    assert max(abs(a - b) for a, b in zip(bf16.batch_loss, fp32.batch_loss)) < 0.05
    assert abs(bf16.valid_loss[-1] - fp32.valid_loss[-1]) < 0.02


#: Each kind of CPU by its flags: (flags, its instruction set, the path where bf16 runs at all).
CPU_KINDS = [
    (['sse2', 'avx2', 'fma'], 'AVX2', None),
    (['avx2', 'avx512f', 'avx512bw', 'avx512_vnni'], 'AVX-512', None),       # bf16 only emulated
    (['avx2', 'avx512f', 'avx512_bf16'], 'avx512_bf16', 'bfloat16'),
    (['avx2', 'avx512f', 'avx512_bf16', 'amx_tile', 'amx_bf16'], 'AMX', 'bfloat16'),
    ([], 'unknown', None),                                                     # arm64, or no /proc/cpuinfo
]


@pytest.mark.parametrize('flags, isa, amp', CPU_KINDS)
def test_the_numeric_path_is_bf16_only_where_the_cpu_has_it_natively(flags, isa, amp, monkeypatch):
    monkeypatch.setattr(train_full, 'device', torch.device('cpu'))
    monkeypatch.setattr(train_full, 'cpu_flags', lambda: flags)
    monkeypatch.setattr(train_full, 'bf16_lstm_supported', lambda: True)     # even where it runs
    assert train_full.instruction_set() == isa
    assert train_full.preferred_amp() == amp
    monkeypatch.setattr(train_full, 'bf16_lstm_supported', lambda: False)    # and never where it cannot
    assert train_full.preferred_amp() is None


def test_the_numeric_path_here_follows_this_cpus_flags():
    native = train_full.instruction_set() in train_full.NATIVE_BF16
    assert train_full.preferred_amp() == ('bfloat16' if native and BF16 else None)


def _speeches(source, n=50_000, seed=0):
    rng = np.random.default_rng(seed)
    words = np.array(['the ', 'people ', 'of ', 'America ', 'will ', 'work. ', 'We ', 'can. '])
    return corpus.SpeechText(''.join(rng.choice(words, n // 4))[:n], source, 'obama', 3)


def test_the_command_line_trains_ships_and_resumes_at_the_tiny_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_full, 'load_speeches', lambda president, order=None: _speeches('corpus'))
    train_full.main(['gru', '--tiny', '--fp32', '--state-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert 'gru: 105 batches per epoch, 3 epochs, on cpu in fp32' in out     # 40,000 / 16 rows / 24
    ck = torch.load(tmp_path / 'gru_tiny.pt', weights_only=True)
    assert ck['config'] == train_full.TINY_CONFIG and [e['amp'] for e in ck['epochs']] == [None] * 3
    state = torch.load(tmp_path / 'gru_state.pt', weights_only=True)
    assert state['fingerprint']['train'].startswith('40000 ids') and state['fingerprint']['valid'].startswith('8000 ids')
    train_full.main(['gru', '--tiny', '--fp32', '--state-dir', str(tmp_path)])   # finished: ships again
    assert 'resuming from' in capsys.readouterr().out
    monkeypatch.setattr(train_full, 'load_speeches', lambda president, order=None: _speeches('corpus', seed=1))
    with pytest.raises(SystemExit, match="belongs to another run; it differs in text 'train'"):
        train_full.main(['gru', '--tiny', '--fp32', '--state-dir', str(tmp_path)])


def test_the_full_size_needs_the_corpus_and_the_tiny_size_splits_the_fallback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_full, 'load_speeches', lambda president, order=None: _speeches('sotu', n=30_000))
    with pytest.raises(SystemExit, match='The full run needs the Grammar Lab corpus'):
        train_full.main(['lstm', '--state-dir', str(tmp_path)])
    assert not (tmp_path / 'lstm_state.pt').exists()
    train_full.main(['lstm', '--tiny', '--fp32', '--state-dir', str(tmp_path)])
    state = torch.load(tmp_path / 'lstm_state.pt', weights_only=True)
    assert state['fingerprint']['train'].startswith('24000 ids')               # 80% of the text
    assert state['fingerprint']['valid'].startswith('6000 ids')


def test_the_cuda_random_state_is_saved_and_restored(tmp_path, monkeypatch):
    # no GPU here: stand-ins for torch.cuda's random state record what train() saves and restores
    gpu_state, restored = [torch.tensor([7, 8, 9], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'get_rng_state_all', lambda: [s.clone() for s in gpu_state])
    monkeypatch.setattr(torch.cuda, 'set_rng_state_all', lambda states: restored.append(states))
    train_small(tmp_path / 's.pt', stop_after=1)
    saved = utils.load_checkpoint(tmp_path / 's.pt')['rng_cuda']
    assert [s.tolist() for s in saved] == [[7, 8, 9]] and restored == []
    gpu_state[0] = torch.tensor([1, 2], dtype=torch.uint8)      # what the resumed epochs leave
    train_small(tmp_path / 's.pt', stop_after=2)
    assert [[s.tolist() for s in states] for states in restored] == [[[7, 8, 9]]]   # once, before epoch 2
    assert [s.tolist() for s in utils.load_checkpoint(tmp_path / 's.pt')['rng_cuda']] == [[1, 2]]
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)   # resumed where there is no GPU
    train_small(tmp_path / 's.pt', stop_after=3)
    assert len(restored) == 1                                          # nothing to restore it to
    assert utils.load_checkpoint(tmp_path / 's.pt')['rng_cuda'] == []   # nor to save


def test_the_optimiser_and_schedule_follow_the_configuration(tmp_path):
    config = dict(CONFIG, lr=3e-3, weight_decay=1e-4, cycle_mult=1, cycles=3)     # 1 + 1 + 1 epochs
    _, history, _ = train_small(tmp_path / 's.pt', stop_after=2, config=config)
    group = utils.load_checkpoint(tmp_path / 's.pt')['optimizer']['param_groups'][0]
    batches = len(history.batch_loss) // 2                             # per epoch
    assert group['initial_lr'] == 3e-3 and group['weight_decay'] == 1e-4
    # two epochs in: a restart with cycles of one epoch (factor 1), halfway down with cycles doubling
    assert group['lr'] == pytest.approx(3e-3 * utils.original_sgdr_factor(2 * batches, batches, cycle_mult=1))
    assert group['lr'] != pytest.approx(3e-3 * utils.original_sgdr_factor(2 * batches, batches, cycle_mult=2))


def test_a_quiet_run_prints_nothing_and_a_verbose_one_says_how_it_runs(tmp_path, capsys):
    (tmp_path / 's.pt.x1y2.tmp').write_bytes(b'half a save')
    train_small(tmp_path / 's.pt', stop_after=1)
    assert capsys.readouterr().out == '' and not (tmp_path / 's.pt.x1y2.tmp').exists()
    (tmp_path / 'v.pt.a1b2.tmp').write_bytes(b'half a save')
    start = time.perf_counter()
    _, _, record = train_small(tmp_path / 'v.pt', stop_after=1, verbose=True, amp=None)
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert 'removed 1 unfinished save(s) of v.pt: v.pt.a1b2.tmp' in out
    assert re.search(r'lstm: \d+ batches per epoch, 3 epochs, on cpu in fp32', out)
    assert re.search(r'^\s+0\s+\d+\.\d{5}\s+\d+\.\d{5}', out, flags=re.M)       # fit's line for epoch 0
    assert 0 < record['epochs'][0]['seconds'] <= elapsed                # the epoch's own duration
    train_small(tmp_path / 'v.pt', stop_after=2, verbose=True)              # the same machine: no move
    out = capsys.readouterr().out
    assert 'resuming from' in out and 'this run moves' not in out


def test_a_finished_run_on_another_machine_says_no_move(tmp_path, monkeypatch, capsys):
    train_small(tmp_path / 's.pt')
    monkeypatch.setattr(train_full, '_hardware', lambda: 'another machine')
    train_small(tmp_path / 's.pt', verbose=True)                          # nothing left to train
    assert 'this run moves' not in capsys.readouterr().out


@pytest.mark.skipif(not BF16, reason='this CPU cannot run an LSTM in bf16 (no avx512_bf16 or AMX)')
def test_the_first_line_names_the_numeric_path(tmp_path, capsys):
    train_small(tmp_path / 's.pt', stop_after=1, verbose=True, amp='bfloat16')
    assert 'in bfloat16 autocast' in capsys.readouterr().out.split('\n')[0]


def test_a_state_of_another_vocabulary_size_is_refused_naming_the_file(tmp_path):
    train_small(tmp_path / 's.pt', stop_after=1)
    with pytest.raises(train_full.StateMismatch, match=r"s\.pt belongs to another run.*text 'vocab': '12 characters' in the state, '13 characters' now"):
        train_full.train('lstm', text_ids(1200), text_ids(400, seed=1), 13, CONFIG, tmp_path / 's.pt', verbose=False)


# --- speech orders, run names, cycle-end weights, run histories ----------------------------

def test_a_speech_order_is_part_of_a_run_and_another_order_is_refused_by_name(tmp_path, monkeypatch, capsys):
    # the text of each order: three speeches joined in the order speech_order gives
    texts = {'a.txt': 'the people ' * 1800, 'b.txt': 'of America ' * 1800, 'c.txt': 'will work. ' * 1800}

    def speeches(president, order=None):
        names = corpus.speech_order(texts, order)
        text, parts = corpus._join([(n, texts[n]) for n in names])
        return corpus.SpeechText(text, 'corpus', 'obama', 3, parts)
    monkeypatch.setattr(train_full, 'load_speeches', speeches)
    orders = {order: corpus.speech_order(texts, order) for order in range(6)}
    order = next(o for o in range(6) if orders[o] != orders[0] and orders[o][-1] != 'c.txt')
    train_full.main(['lstm', '--tiny', '--fp32', '--order', str(order), '--state-dir', str(tmp_path)])
    assert f'lstm_order{order}_seed42_fp32: 3 epochs' in capsys.readouterr().out
    state = torch.load(tmp_path / 'lstm_state.pt', weights_only=True)
    assert state['config']['order_seed'] == order
    doc = json.loads((tmp_path / f'lstm_order{order}_seed42_fp32.json').read_text())
    assert doc['order_seed'] == order and doc['seed'] == 42 and doc['fp32_forced'] is True
    assert doc['valid_files'] == [orders[order][-1]]      # the last 20% lie in the last speech
    with pytest.raises(SystemExit, match=f"config 'order_seed': {order} in the state, 0 now"):
        train_full.main(['lstm', '--tiny', '--fp32', '--order', '0', '--state-dir', str(tmp_path)])
    with pytest.raises(SystemExit, match=f"config 'order_seed': {order} in the state, None now"):
        train_full.main(['lstm', '--tiny', '--fp32', '--state-dir', str(tmp_path)])
    with pytest.raises(SystemExit, match="config 'seed': 42 in the state, 7 now"):
        train_full.main(['lstm', '--tiny', '--fp32', '--order', str(order), '--seed', '7',
                         '--state-dir', str(tmp_path)])


def test_each_run_has_its_own_folder_and_only_the_headline_ships_to_models(tmp_path, monkeypatch):
    monkeypatch.setattr(train_full, 'DATA_DIR', tmp_path)
    assert train_full.run_name('lstm', train_full.ORIGINAL_CONFIG) == 'lstm_sorted_seed42'
    assert train_full.run_name('gru', dict(train_full.ORIGINAL_CONFIG, order_seed=3, seed=1),
                               fp32=True) == 'gru_order3_seed1_fp32'
    shipped = []
    monkeypatch.setattr(train_full, 'train', lambda *a, **k: ('model', 'history', 'record'))
    monkeypatch.setattr(train_full, 'ship', lambda cell, m, h, r, v, ids, config, out: shipped.append(out) or 1.0)
    monkeypatch.setattr(train_full, 'write_run_history', lambda path, *a: shipped.append(path))
    monkeypatch.setattr(train_full, 'load_speeches', lambda president, order=None: _speeches('corpus', n=1_000_000))
    monkeypatch.setattr(train_full, 'History', None)
    for argv in (['lstm'], ['lstm', '--order', '2'], ['lstm', '--seed', '1'], ['lstm', '--fp32']):
        with pytest.raises(AttributeError):      # the stand-in history has no epochs to print
            train_full.main(argv)
    models = train_full.ROOT / 'models'
    assert shipped == [models / 'lstm_3x512.pt', models / 'runs' / 'lstm_sorted_seed42.json',
                       tmp_path / 'full_run' / 'lstm_order2_seed42' / 'lstm_final.pt',
                       models / 'runs' / 'lstm_order2_seed42.json',
                       tmp_path / 'full_run' / 'lstm_sorted_seed1' / 'lstm_final.pt',
                       models / 'runs' / 'lstm_sorted_seed1.json',
                       tmp_path / 'full_run' / 'lstm_sorted_seed42_fp32' / 'lstm_final.pt',
                       models / 'runs' / 'lstm_sorted_seed42_fp32.json']


def test_a_state_from_before_speech_orders_resumes_as_the_sorted_order(tmp_path):
    train_small(tmp_path / 's.pt', stop_after=1, config=dict(CONFIG, order_seed=None))
    state = utils.load_checkpoint(tmp_path / 's.pt')
    del state['config']['order_seed']
    utils.save_checkpoint(state, tmp_path / 's.pt')
    _, history, _ = train_small(tmp_path / 's.pt', stop_after=2, config=dict(CONFIG, order_seed=None))
    assert history.epoch == [0, 1]
    with pytest.raises(train_full.StateMismatch, match="config 'order_seed': None in the state, 4 now"):
        train_small(tmp_path / 's.pt', config=dict(CONFIG, order_seed=4))


def test_the_cycle_end_weights_are_kept_in_fp16(tmp_path):
    config = dict(CONFIG, cycles=3)                            # cycles end at epochs 0, 2 and 6
    assert train_full.cycle_ends(config) == [0, 2, 6]
    assert train_full.cycle_ends(train_full.ORIGINAL_CONFIG) == [0, 2, 6, 14, 30]
    _, history, _ = train_small(tmp_path / 's.pt', stop_after=2, config=config, vocab='abcdefghijkl')
    assert sorted(p.name for p in tmp_path.glob('*cycle_end*')) == ['lstm_cycle_end_epoch00.pt']
    model, history, _ = train_small(tmp_path / 's.pt', stop_after=3, config=config, vocab='abcdefghijkl')
    assert sorted(p.name for p in tmp_path.glob('*cycle_end*')) == ['lstm_cycle_end_epoch00.pt',
                                                                     'lstm_cycle_end_epoch02.pt']
    snap = torch.load(tmp_path / 'lstm_cycle_end_epoch02.pt', weights_only=True)
    assert snap['epoch'] == 2 and snap['valid_loss'] == history.valid_loss[2]
    assert snap['train_loss'] == history.train_loss[2] and snap['vocab'] == list('abcdefghijkl')
    assert snap['config'] == config and snap['cell'] == 'lstm'
    for k, v in model.state_dict().items():                   # the weights at that epoch, in fp16
        assert snap['model'][k].dtype == (torch.float16 if v.is_floating_point() else v.dtype)
        assert torch.equal(snap['model'][k], v.half() if v.is_floating_point() else v)
    first = torch.load(tmp_path / 'lstm_cycle_end_epoch00.pt', weights_only=True)
    assert first['epoch'] == 0 and not all(torch.equal(first['model'][k], snap['model'][k]) for k in snap['model'])


def test_speech_orders_are_seeded_permutations_and_sorted_by_default():
    names = [f'obama_speeches_{i:03d}.txt' for i in (5, 1, 12, 0, 7, 3)]
    assert corpus.speech_order(names) == sorted(names)
    shuffled = corpus.speech_order(names, 1)
    assert sorted(shuffled) == sorted(names) and shuffled != sorted(names)
    assert corpus.speech_order(list(reversed(names)), 1) == shuffled       # from the names, not their listing
    assert corpus.speech_order(names, 2) != shuffled
    import random
    expected = sorted(names)
    random.Random(1).shuffle(expected)                      # documented: Python's random.Random
    assert shuffled == expected


def test_a_joined_text_knows_which_speeches_lie_in_a_stretch():
    text, parts = corpus._join([('a', 'xxxx'), ('b', 'yy'), ('c', 'zzz')])
    speeches = corpus.SpeechText(text, 'corpus', 'obama', 3, parts)
    assert text == 'xxxx yy zzz' and parts == [('a', 0, 4), ('b', 5, 7), ('c', 8, 11)]
    assert [text[a:b] for _, a, b in parts] == ['xxxx', 'yy', 'zzz']
    assert speeches.names_between(4, 5) == []                   # only the space between a and b
    assert speeches.names_between(3, 6) == ['a', 'b']
    assert speeches.names_between(7) == ['c'] and speeches.names_between(6) == ['b', 'c']
    assert speeches.names_between(0, 1) == ['a']


def test_a_run_with_the_original_varied_lengths_resumes_bit_for_bit(tmp_path):
    config = dict(CONFIG, vary_bptt=True)
    _, whole, _ = train_small(tmp_path / 'a.pt', config=config)
    train_small(tmp_path / 'b.pt', stop_after=1, config=config)
    _, resumed, _ = train_small(tmp_path / 'b.pt', config=config)
    assert resumed.batch_loss == whole.batch_loss and resumed.valid_loss == whole.valid_loss
    fixed = train_small(tmp_path / 'c.pt', config=CONFIG)[1]
    batches = len(whole.batch_loss) // 3
    assert batches == 1200 // 4 // 10 - 1 and len(fixed.batch_loss) // 3 == 30   # 29 varied, 30 fixed
    assert train_full.run_name('lstm', config) == 'lstm_sorted_seed42_varybptt'


# --- nothing lost: diverged epochs, one run per state, damaged states, full disks ----------

def _poison_last_batch(monkeypatch, value=float('nan')):
    """Make fit's last update of the next epoch leave a non-finite weight behind."""
    real_fit = train_full.fit

    def fit(model, *args, **kwargs):
        history = real_fit(model, *args, **kwargs)
        with torch.no_grad():
            model.l_out.bias[0] = value
        history.valid_loss[-1] = train_full.evaluate(model, args[0].valid, train_full.seq_nll)
        return history
    monkeypatch.setattr(train_full, 'fit', fit)


def test_a_diverged_epoch_never_replaces_the_last_good_state(tmp_path, monkeypatch):
    train_small(tmp_path / 's.pt', stop_after=2)
    good = (tmp_path / 's.pt').read_bytes()
    _poison_last_batch(monkeypatch)
    with pytest.raises(train_full.RunDiverged, match=r'Epoch 2 diverged \(the validation loss is nan; the weights '
                       r'of l_out.bias are not finite\), so it was not saved; .*s.pt still holds epoch 1\. '
                       r'Run the same command with --clip'):
        train_small(tmp_path / 's.pt')
    assert (tmp_path / 's.pt').read_bytes() == good
    with pytest.raises(train_full.RunDiverged, match=r'Epoch 0 diverged .*not saved; no state was saved'):
        train_small(tmp_path / 'fresh.pt')                           # the first epoch: nothing to keep
    assert not (tmp_path / 'fresh.pt').exists()
    monkeypatch.undo()
    _, history, record = train_small(tmp_path / 's.pt', clip=1.0)   # the way on it names
    assert history.epoch == [0, 1, 2] and [e['clip'] for e in record['epochs']] == [None, None, 1.0]


def test_a_loss_that_stops_being_finite_mid_epoch_keeps_the_state_and_says_how_to_go_on(tmp_path, monkeypatch):
    train_small(tmp_path / 's.pt', stop_after=1)
    good = (tmp_path / 's.pt').read_bytes()
    real = train_full.build_model

    def poisoned(cell, vocab_size, config):            # the resumed weights turn NaN in memory
        model = real(cell, vocab_size, config)
        load = model.load_state_dict
        model.load_state_dict = lambda sd: load({k: v * float('nan') if k == 'e.weight' else v
                                                 for k, v in sd.items()})
        return model
    monkeypatch.setattr(train_full, 'build_model', poisoned)
    with pytest.raises(train_full.RunDiverged, match=r'The loss is nan at epoch 1, batch 0: training diverged; '
                       r'.*s.pt still holds epoch 0\. Run the same command with --clip'):
        train_small(tmp_path / 's.pt', stop_after=2)
    assert (tmp_path / 's.pt').read_bytes() == good


def test_a_second_run_on_the_same_state_is_refused_by_name(tmp_path):
    from filelock import FileLock
    with FileLock(str(tmp_path / 's.pt') + '.lock'):          # a run holding the state
        (tmp_path / 's.pt.a1b2.tmp').write_bytes(b'a save of that run, under way')
        with pytest.raises(train_full.StateMismatch, match=r'Another run is training into .*s\.pt \(it holds '
                           r'.*s\.pt\.lock\): wait for it to end, or give this run a state of its own'):
            train_small(tmp_path / 's.pt', stop_after=1)
        assert (tmp_path / 's.pt.a1b2.tmp').exists() and not (tmp_path / 's.pt').exists()
    train_small(tmp_path / 's.pt', stop_after=1)                      # once it ended
    assert (tmp_path / 's.pt').exists() and not (tmp_path / 's.pt.a1b2.tmp').exists()


def test_a_full_disk_during_a_save_names_the_cause_and_keeps_the_last_epoch(tmp_path, monkeypatch):
    import errno
    train_small(tmp_path / 's.pt', stop_after=1)
    good = (tmp_path / 's.pt').read_bytes()
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, b):
            raise OSError(errno.ENOSPC, 'No space left on device')

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()
    monkeypatch.setattr(checkpoints.os, 'fdopen', lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match=r'Could not save epoch 1 \(No space left in .* to save s\.pt: s\.pt is as it '
                       r'was before this save; free some space and save again\); the last completed epoch '
                       r'before it, 0, is kept in .*s\.pt') as e:
        train_small(tmp_path / 's.pt', stop_after=2)
    assert e.value.errno == errno.ENOSPC                     # a caller can still tell a full disk by its code
    assert (tmp_path / 's.pt').read_bytes() == good and not list(tmp_path.glob('*.tmp'))


def test_a_state_carried_out_of_bf16_autocast_runs_on_in_fp32():
    model = train_full.build_model('lstm', 12, CONFIG).eval()
    x = torch.randint(0, 12, (4, 5))
    model(x)
    carried = tuple(t.clone() for t in model.h)
    model.h = tuple(t.to(torch.bfloat16) for t in carried)     # as a bf16 forward leaves it
    out = model(x)                                              # raised inside the LSTM before
    model.h = tuple(t.to(torch.bfloat16).float() for t in carried)
    assert torch.equal(out, model(x)) and model.h[0].dtype == torch.float32


def test_a_text_too_short_for_the_configuration_is_named_with_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(train_full, 'load_speeches', lambda president, order=None: _speeches('corpus', n=40_010))
    with pytest.raises(SystemExit, match=r'the text \(3 speeches of obama, 40,010 characters, from the corpus\) '
                       r'is too short for this configuration: it needs more than 40,032 characters \(40,000 '
                       r'for training, then at least 32 for validation\)'):
        train_full.main(['lstm', '--tiny', '--state-dir', str(tmp_path)])
    assert not list(tmp_path.glob('*state*'))


# --- shipped checkpoints are checked before they are trusted --------------------------------


def test_beam_search_raises_when_no_extension_is_finite():
    model = train_full.build_model('lstm', 12, CONFIG).eval()
    with torch.no_grad():
        model.l_out.bias.fill_(float('nan'))
    with pytest.raises(FloatingPointError, match=r"no extension of 'ab' has a finite log-probability at step 0"):
        utils.beam_search(model, utils.CharVocab('abcdefghijkl'), 'ab', 3, beam_size=2)


def test_a_regularisation_variant_is_a_run_of_its_own_named_by_what_it_changes(tmp_path, monkeypatch, capsys):
    assert train_full.run_name('awd', dict(train_full.CELL_CONFIGS['awd'])) == 'awd_sorted_seed42'
    variant = dict(train_full.CELL_CONFIGS['awd'], **train_full.awd_variant(['wdrop=0', 'alpha=2', 'tie=true']))
    assert train_full.run_name('awd', variant) == 'awd_sorted_seed42_wdrop0_alpha2_tie'
    assert train_full.run_name('awd', dict(variant, tie=False, dropouti=0.25)) == 'awd_sorted_seed42_dropouti0.25_wdrop0_alpha2'
    clipped = dict(train_full.CELL_CONFIGS['awd'], order_seed=2, **train_full.awd_variant(['clip=0.25']))
    assert train_full.run_name('awd', clipped) == 'awd_order2_seed42_clip0.25'
    monkeypatch.setattr(train_full, 'load_speeches', lambda president, order=None: _speeches('corpus'))
    train_full.main(['awd', '--tiny', '--fp32', '--awd', 'wdrop=0', '--state-dir', str(tmp_path)])
    ck = torch.load(tmp_path / 'awd_tiny.pt', weights_only=True)
    assert ck['config'] == dict(train_full.TINY_CONFIG, **dict(train_full.AWD_CONFIG, wdrop=0.0))
    assert json.loads((tmp_path / 'awd_sorted_seed42_wdrop0_fp32.json').read_text())['config']['wdrop'] == 0.0
    with pytest.raises(SystemExit, match="belongs to another run; it differs in config 'wdrop'"):
        train_full.main(['awd', '--tiny', '--fp32', '--state-dir', str(tmp_path)])   # the default's, same folder


@pytest.mark.parametrize('argv, words', [
    (['lstm', '--awd', 'wdrop=0'], 'it needs the cell awd, not lstm'),
    (['awd', '--awd', 'wdropp=0'], "--awd 'wdropp=0': expected KEY=VALUE with KEY one of dropouti"),
    (['awd', '--awd', 'wdrop'], "--awd 'wdrop': expected KEY=VALUE"),
    (['awd', '--awd', 'wdrop=half'], "wdrop is a number, not 'half'"),
    (['awd', '--awd', 'wdrop=1'], 'wdrop is a rate in \\[0, 1\\)'),
    (['awd', '--awd', 'alpha=-1'], 'alpha is a weight, at least 0'),
    (['awd', '--awd', 'clip=0'], 'clip is a norm above 0'),
    (['awd', '--awd', 'tie=yes'], 'tie is true or false'),
])
def test_a_bad_regularisation_setting_is_refused_before_anything_runs(argv, words, capsys):
    with pytest.raises(SystemExit):
        train_full.main(argv)
    assert re.search(words, capsys.readouterr().err)


@pytest.mark.parametrize('flags, isa, amp', CPU_KINDS)
def test_each_epoch_records_the_cpus_instruction_set(flags, isa, amp, tmp_path, monkeypatch):
    monkeypatch.setattr(train_full, 'cpu_flags', lambda: flags)
    _, _, record = train_small(tmp_path / 's.pt', stop_after=1)
    assert record['epochs'][0]['instruction_set'] == isa
    assert record['epochs'][0]['amp'] is None                 # _train's path, fp32, recorded beside it


def test_the_cpus_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f\n\n')
    real_open = open
    monkeypatch.setattr('builtins.open', lambda path, *a, **k: real_open(cpuinfo if path == '/proc/cpuinfo' else path, *a, **k))
    assert train_full.cpu_flags() == ['fpu', 'avx2', 'avx512f']
    assert train_full.instruction_set() == 'AVX-512'
    assert train_full._hardware().startswith('Some CPU, ')
    cpuinfo.unlink()                                           # no such file: no flags, an unknown CPU
    assert train_full.cpu_flags() == [] and train_full.instruction_set() == 'unknown'


def test_a_snapshot_ensemble_averages_the_snapshots_probabilities(tmp_path):
    config = dict(CONFIG, cycles=3)                            # snapshots at epochs 0, 2 and 6
    vocab = list('abcdefghijkl')
    train_small(tmp_path / 's.pt', config=config, vocab=''.join(vocab))
    paths = sorted(tmp_path.glob('lstm_cycle_end_epoch*.pt'))
    valid_ids = text_ids(400, seed=1)
    losses = train_full.snapshot_ensemble(paths, vocab, valid_ids)
    assert list(losses) == ['epoch 0', 'epoch 2', 'epoch 6', 'last 2', 'last 3']
    models = [checkpoints.load_cycle_end(p, train_full.MODELS_BY_CELL, vocab)[0] for p in paths]
    loader = utils.LanguageModelLoader(valid_ids, config['bs'], config['bptt'])
    for model, label in zip(models, ['epoch 0', 'epoch 2', 'epoch 6']):      # one snapshot: evaluate's figure
        assert losses[label] == pytest.approx(utils.evaluate(model, loader, utils.seq_nll), abs=1e-6)
    probs = []                                                 # by hand: each model's probabilities, then their mean
    for model in models[1:]:
        positions, character_losses = utils.per_character_losses(model, valid_ids, config['bs'], config['bptt'])
        probs.append(np.exp(-character_losses.astype(np.float64)))
    assert losses['last 2'] == pytest.approx(-np.log((probs[0] + probs[1]) / 2).mean(), abs=1e-6)
    assert losses['last 2'] != pytest.approx(np.mean([losses['epoch 2'], losses['epoch 6']]), abs=1e-6)
    with pytest.raises(ValueError, match='no cycle-end snapshots'):
        train_full.snapshot_ensemble([], vocab, valid_ids)


def test_the_command_line_measures_a_runs_snapshots(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_full, 'load_speeches', lambda president, order=None: _speeches('corpus'))
    with pytest.raises(SystemExit, match='holds no cycle-end snapshots'):
        train_full.main(['lstm', '--tiny', '--ensemble', '--state-dir', str(tmp_path / 'none')])
    assert not (tmp_path / 'none').exists()                   # measuring creates no state folder
    train_full.main(['lstm', '--tiny', '--fp32', '--state-dir', str(tmp_path)])
    capsys.readouterr()
    train_full.main(['lstm', '--tiny', '--fp32', '--ensemble', '--state-dir', str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'lstm_sorted_seed42_fp32: validation loss of its cycle-end snapshots, alone and averaged'
    assert [line.split()[:2] for line in lines[1:-1]] == [['epoch', '0'], ['epoch', '2'], ['last', '2']]
    history = json.loads((tmp_path / 'lstm_sorted_seed42_fp32.json').read_text())   # the figures join the run's history
    assert list(history['snapshot_ensemble']['valid_loss']) == ['epoch 0', 'epoch 2', 'last 2']
    assert history['snapshot_ensemble']['valid_loss']['epoch 2'] == pytest.approx(float(lines[2].split()[-1]), abs=1e-4)
    assert history['snapshot_ensemble']['measured']['device'] == 'cpu' and len(history['valid_loss']) == 3


@pytest.mark.parametrize('path', sorted((train_full.ROOT / 'models' / 'runs').glob('*.json')),
                         ids=lambda p: p.name)
def test_each_shipped_run_history_is_whole_and_named_by_what_it_records(path):
    # notebook 03 section 7 reads these files; each must be a finished 31-epoch run of the
    # original's configuration, its name built from its own cell, order, seed and arithmetic
    doc = json.loads(path.read_text())
    config = doc['config']
    assert path.stem == doc['name'] == train_full.run_name(doc['cell'], config, doc['fp32_forced'])
    assert (doc['order_seed'], doc['seed']) == (config['order_seed'], config['seed'])
    variant = {key: config[key] for key in train_full.AWD_SETTINGS if key in config} if doc['cell'] == 'awd' else {}
    expected = dict(train_full.CELL_CONFIGS[doc['cell']], order_seed=config['order_seed'],
                    seed=config['seed'], vary_bptt=config['vary_bptt'], **variant)
    assert config == expected
    n = train_full.cycle_ends(config)[-1] + 1                     # 31 for the original's cycles
    assert doc['epoch'] == list(range(n)) and len(doc['train_loss']) == len(doc['valid_loss']) == n
    assert len(doc['epochs']) == n and all(math.isfinite(v) for v in doc['train_loss'] + doc['valid_loss'])
    assert abs(doc['valid_loss_final_fp16_weights'] - doc['valid_loss'][-1]) < 1e-3
    assert doc['valid_files'] and all(re.fullmatch(r'obama_speeches_\d{3}\.txt', f) for f in doc['valid_files'])
    if doc['fp32_forced']:
        assert all(e['amp'] is None for e in doc['epochs'])
