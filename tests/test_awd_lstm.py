"""The regularised LSTM of awd_lstm.py (notebook 08, train_full.py's awd cell): each piece, the
model that puts them together, and its runs at a tiny size."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import awd_lstm
import train_full
import utils
from helpers import CONFIG, text_ids, train_small

AWD = dict(CONFIG, **train_full.AWD_CONFIG)


def test_locked_dropout_shares_one_mask_across_time_and_is_off_in_eval():
    drop = awd_lstm.LockedDropout(0.5)
    x = torch.ones(3, 7, 5)
    y = drop(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and 0 < (y == 0).sum() < y.numel()
    assert torch.equal(y, y[:, :1].expand_as(y))            # every time step has the same mask
    assert not torch.equal(y[0], y[1]) or not torch.equal(y[1], y[2])   # masks differ by sequence
    assert torch.equal(drop.eval()(x), x)


def test_embedding_dropout_drops_whole_characters_and_is_off_in_eval():
    e = nn.Embedding(6, 4)
    x = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1]])
    torch.manual_seed(1)
    y = awd_lstm.embedding_dropout(e, x, 0.5, training=True)
    dropped = {int(c) for c, row in zip(x[0], y[0]) if not row.any()}
    assert dropped and all(not y[0, j].any() for j in range(8) if int(x[0, j]) in dropped)  # every occurrence
    kept = [j for j in range(8) if int(x[0, j]) not in dropped]
    assert torch.allclose(y[0, kept], 2 * e(x)[0, kept])
    assert torch.equal(awd_lstm.embedding_dropout(e, x, 0.5, training=False), e(x))


def test_weight_drop_runs_the_fused_lstm_on_the_dropped_matrix_and_the_raw_one_in_eval():
    torch.manual_seed(0)
    wd = awd_lstm.WeightDroppedLSTM(3, 4, 0.5)
    x = torch.randn(2, 6, 3)
    reference = nn.LSTM(3, 4, batch_first=True)
    state = {k: v for k, v in wd.lstm.state_dict().items()}
    torch.manual_seed(5)
    out, _ = wd.train()(x)
    torch.manual_seed(5)
    dropped = F.dropout(wd.weight_hh_raw, 0.5, True)          # the same draw
    reference.load_state_dict(dict(state, weight_hh_l0=dropped.detach()))
    assert (dropped == 0).any() and torch.allclose(out, reference(x)[0], atol=1e-6)
    out.sum().backward()
    assert wd.weight_hh_raw.grad is not None and (wd.weight_hh_raw.grad[dropped == 0] == 0).all()
    reference.load_state_dict(dict(state, weight_hh_l0=wd.weight_hh_raw.detach()))
    assert torch.equal(wd.eval()(x)[0], reference(x)[0])      # the same weights at test time
    assert 'lstm.weight_hh_l0' not in wd.state_dict() and 'weight_hh_raw' in wd.state_dict()


def test_a_rate_of_zero_draws_no_mask_and_passes_its_input_on():
    x, chars, e = torch.randn(2, 5, 3), torch.tensor([[0, 1, 2]]), nn.Embedding(4, 3)
    before = torch.get_rng_state()
    assert awd_lstm.LockedDropout(0.0)(x) is x
    assert torch.equal(awd_lstm.embedding_dropout(e, chars, 0.0, training=True), e(chars))
    assert torch.equal(torch.get_rng_state(), before)          # no random draw: the next masks are unchanged


def test_each_rate_acts_where_the_model_says_and_nowhere_in_eval():
    off = dict(AWD, n_layers=3, dropouti=0.0, dropouth=0.0, dropout=0.0, dropoute=0.0, wdrop=0.0)
    x = torch.randint(0, 12, (4, 10))

    def train_and_eval_outputs(**rates):
        torch.manual_seed(0)
        model = train_full.build_model('awd', 12, dict(off, **rates))
        calls = {name: 0 for name in ('drop_i', 'drop_h', 'drop_o')}
        for name in calls:
            getattr(model, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        torch.manual_seed(1)
        trained = model.train().run(x, None)[0]
        return trained, model.eval().run(x, None)[0], calls

    trained, evaluated, calls = train_and_eval_outputs()
    assert torch.equal(trained, evaluated)                      # every rate 0: training changes nothing
    assert calls == {'drop_i': 2, 'drop_h': 4, 'drop_o': 2}     # per pass: input, between the 3 layers, output
    for rate in ('dropouti', 'dropouth', 'dropout', 'dropoute', 'wdrop'):
        trained, evaluated, _ = train_and_eval_outputs(**{rate: 0.5})
        assert not torch.allclose(trained, evaluated), rate


@pytest.mark.parametrize('tie', [False, True])
def test_the_layers_have_the_widths_the_decoder_reads(tie):
    model = train_full.build_model('awd', 12, dict(AWD, n_layers=3, tie=tie))
    last = AWD['n_fac'] if tie else AWD['n_hidden']
    assert [rnn.lstm.hidden_size for rnn in model.rnns] == [AWD['n_hidden']] * 2 + [last]
    assert model.l_out.in_features == last and model.l_out.weight.shape == (12, last)
    one_layer = train_full.build_model('awd', 12, dict(AWD, n_layers=1, tie=tie))
    assert one_layer(torch.randint(0, 12, (2, 5))).shape == (2, 5, 12)


def test_ar_and_tar_are_what_they_say_on_a_known_output_and_zero_in_eval():
    model = train_full.build_model('awd', 12, dict(AWD, alpha=2.0, beta=3.0)).train()
    raw = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [4.0, 4.0]]])  # (batch 1, time 3, features 2)
    dropped = torch.tensor([[[0.0, 4.0], [2.0, 0.0], [1.0, 1.0]]])
    model.last = (raw, dropped)
    ar = (0 + 16 + 4 + 0 + 1 + 1) / 6
    tar = ((3 - 1) ** 2 + (6 - 2) ** 2 + (4 - 3) ** 2 + (4 - 6) ** 2) / 4     # step to step
    assert model.regularisation().item() == pytest.approx(2.0 * ar + 3.0 * tar)
    assert model.eval().regularisation() == 0.0


def test_ar_and_tar_reach_the_loss_the_run_trains_on(tmp_path):
    _, plain, _ = train_small(tmp_path / 'a.pt', stop_after=1, cell='awd', config=AWD)
    _, regularised, _ = train_small(tmp_path / 'b.pt', stop_after=1, cell='awd', config=dict(AWD, alpha=2.0, beta=1.0))
    assert regularised.batch_loss[0] > plain.batch_loss[0]      # the same first batch, plus AR and TAR
    assert regularised.valid_loss != plain.valid_loss


def test_the_regularised_lstm_has_the_shapes_ties_its_decoder_and_resumes_bit_for_bit(tmp_path):
    model = train_full.build_model('awd', 12, dict(AWD, tie=True))
    assert model.l_out.weight is model.e.weight and model.rnns[-1].lstm.hidden_size == AWD['n_fac']
    log_probs = model(torch.randint(0, 12, (4, 10)))
    assert log_probs.shape == (4, 10, 12) and len(model.h) == AWD['n_layers']
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(4, 10))
    _, whole, _ = train_small(tmp_path / 'a.pt', cell='awd', config=AWD)
    train_small(tmp_path / 'b.pt', stop_after=1, cell='awd', config=AWD)
    model, resumed, record = train_small(tmp_path / 'b.pt', cell='awd', config=AWD)
    assert resumed.batch_loss == whole.batch_loss and resumed.valid_loss == whole.valid_loss
    path = tmp_path / 'ship.pt'
    recorded = train_full.ship('awd', model, resumed, record, utils.CharVocab('abcdefghijkl'),
                               text_ids(400, seed=1), AWD, path)
    with pytest.raises(ValueError, match=r"holds a model of cell 'awd'.*pass its class"):
        utils.load_shipped(path)                                # utils knows notebook 03's cells only
    loaded, _ = utils.load_shipped(path, models=awd_lstm.MODELS_BY_CELL)
    loss = utils.evaluate(loaded, utils.LanguageModelLoader(text_ids(400, seed=1), AWD['bs'], AWD['bptt']), utils.seq_nll)
    assert loss == pytest.approx(recorded, abs=1e-6)


def test_the_regularised_lstm_carries_one_state_per_layer_from_batch_to_batch_like_notebook_03s_models():
    torch.manual_seed(0)
    model = train_full.build_model('awd', 12, AWD).eval()
    x = torch.randint(0, 12, (4, 10))
    with torch.inference_mode():
        whole = model.run(x, None)[0]
        model.reset()
        halves = torch.cat([model(x[:, :5]), model(x[:, 5:])], dim=1)   # the state carried across
        assert torch.allclose(halves, whole, atol=1e-6)
        assert len(model.h) == AWD['n_layers'] and not model.h[0][0].requires_grad
        assert torch.allclose(model(x[:2, :5]), whole[:2, :5], atol=1e-6)  # another batch size: afresh


def test_beam_search_carries_the_regularised_lstms_state_of_separate_layers():
    # its state is a list of (h, c), one per layer: each beam must carry its own through the search
    torch.manual_seed(0)
    model = train_full.build_model('awd', 12, dict(AWD, tie=True)).eval()
    vocab = utils.CharVocab('abcdefghijkl')
    (text, logp), *_ = utils.beam_search(model, vocab, 'ab', 6, beam_size=3)
    ids = torch.from_numpy(vocab.encode(text)).unsqueeze(0)
    with torch.inference_mode():
        rescored = model.run(ids, None)[0][0, 1:-1].gather(1, ids[0, 2:, None]).sum()   # the 6 added characters
    assert len(text) == 8 and logp == pytest.approx(rescored.item(), abs=1e-4)
