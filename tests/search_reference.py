"""The original's beam search, kept beside the tests: the reference that ``utils.beam_search``
is checked against (tests/test_generation.py) and timed against (tests/benchmarks.py)."""
import torch


def beam_search_by_rereading(model, vocab, prompt, steps, beam_size):
    """The same search in the original's form: every candidate is scored by feeding its
    whole text to the model from a zero state, one candidate at a time. Slow; kept to check
    ``utils.beam_search`` against and to measure how much faster that is."""
    model.eval()
    dev = next(model.parameters()).device
    beams = [(prompt, 0.0)]
    with torch.inference_mode():
        for _ in range(steps):
            cands = []
            for text, score in beams:
                x = torch.from_numpy(vocab.encode(text)).unsqueeze(0).to(dev)
                last = model.run(x, None)[0][0, -1].float().cpu()
                cands += [(text + vocab.itos[c], score + float(last[c])) for c in range(len(vocab))]
            cands.sort(key=lambda tc: -tc[1])
            beams = cands[:beam_size]
    return beams
