"""Generation with a KV cache: greedy, sampling (temperature, top-k, top-p, repetition penalty) and beam search.

The semantics are those of Hugging Face ``generate()``: decoder prompts are left-padded and returned with
their continuation; encoder-decoders return the decoder sequence from its start token; finished rows are
filled with the pad token; beam search keeps ``num_beams`` running and ``num_beams`` finished hypotheses per
input and scores a finished one by ``sum of log-probs / generated_length ** length_penalty``.

The model runs once over the whole prompt (and, for encoder-decoders, the encoder runs once and its
cross-attention keys/values stay in the cache), then once per new token on that token alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.errors import LmlabError
from lmlab.model.cache import KVCache
from lmlab.model.layers import decode_layout
from lmlab.objectives.base import decoder_start_id, imported_decoder_start, pad_batch

_NEG = -1.0e9  # a score that rules a hypothesis out (the value Hugging Face uses, so ties break alike)
MIN_TOKENS_FOR_LAYOUT = 6  # shorter generations keep nn.Linear's layout (see generate)


def _error(message: str) -> LmlabError:
    # ``lmlab.infer`` imports this module, so its error class is looked up at call time.
    from lmlab.infer import InferenceError

    return InferenceError(message)


# --------------------------------------------------------------------------- logits processing


def _process(scores: Tensor, seen: Tensor | None, *, repetition_penalty: float, do_sample: bool,
             temperature: float, top_k: int, top_p: float, min_keep: int) -> Tensor:
    """Hugging Face's processor chain on (N, V) float scores: repetition penalty, then (sampling only)
    temperature, top-k and top-p (nucleus). ``seen`` (N, V) marks the tokens already in each sequence."""
    if seen is not None:  # CTRL: shrink the scores of tokens already present, whatever their sign
        penalized = torch.where(scores < 0, scores * repetition_penalty, scores / repetition_penalty)
        scores = torch.where(seen, penalized, scores)
    if not do_sample:
        return scores
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        kth = scores.topk(min(max(top_k, min_keep), scores.shape[-1])).values[:, -1:]  # (N, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1)  # ascending
        remove = sorted_scores.softmax(-1).cumsum(-1) <= 1 - top_p  # (N, V) the low tail holding 1 - top_p
        remove[:, -min_keep:] = False  # the most likely tokens always stay
        scores = scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return scores


# --------------------------------------------------------------------------- model calls


class _Steps:
    """The model calls of one generation: the prompt once, then one token per row, over one KV cache."""

    def __init__(self, model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None,
                 start: Tensor | None, max_new_tokens: int) -> None:
        self.model = model
        self.enc_dec = start is not None
        self.start = start  # (B, 1) decoder start tokens (encoder-decoders)
        self.input_ids, self.attention_mask = input_ids, attention_mask
        B, T = input_ids.shape
        self.cache = KVCache((1 if self.enc_dec else T) + max_new_tokens)
        self.mask = self.next_pos = None
        if not self.enc_dec and attention_mask is not None:  # left-padded decoder prompts
            self.mask = torch.ones(B, T + max_new_tokens, dtype=torch.bool, device=input_ids.device)
            self.mask[:, :T] = attention_mask.bool()
            self.positions = (attention_mask.long().cumsum(1) - 1).clamp(min=0)  # (B, T) 0 at the first real token
            self.next_pos = attention_mask.long().sum(1, keepdim=True)  # (B, 1) position of the first new token

    def prompt(self) -> Tensor:
        """Logits (B, V) at the last prompt position (the decoder start token for encoder-decoders)."""
        m = self.model
        if self.enc_dec:
            h = m.hidden(self.input_ids, attention_mask=self.attention_mask, decoder_input_ids=self.start,
                         kv_cache=self.cache)  # (B, 1, D); the encoder runs here, once
        elif self.mask is None:
            h = m.hidden(self.input_ids, kv_cache=self.cache)  # (B, T, D)
        else:
            T = self.input_ids.shape[1]
            h = m.hidden(self.input_ids, attention_mask=self.mask[:, :T], position_ids=self.positions,
                         kv_cache=self.cache)
        return m.logits(h[:, -1])  # the head only where the next token is predicted

    def expand(self, n: int) -> None:
        """Repeat every row ``n`` times in place (beams, several samples per prompt): (B,) -> (B * n,)."""
        if n == 1:
            return
        self.cache.repeat(n)
        if self.mask is not None:
            self.mask = self.mask.repeat_interleave(n, 0)
            self.next_pos = self.next_pos.repeat_interleave(n, 0)

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (N,), e.g. surviving beams. Beams of one input share its prompt's padding and
        positions, and ``index`` never leaves an input's group of beams, so only the cache moves."""
        self.cache.reorder(index)

    def keep(self, index: Tensor) -> None:
        """Go on with rows ``index`` (N',) only: the rows that have not finished."""
        self.cache.reorder(index)
        if self.mask is not None:
            self.mask, self.next_pos = self.mask[index], self.next_pos[index]

    def next(self, tokens: Tensor) -> Tensor:
        """Logits (N, V) after feeding ``tokens`` (N,), one per row."""
        x = tokens[:, None]  # (N, 1)
        m = self.model
        if self.enc_dec:
            h = m.hidden(None, decoder_input_ids=x, kv_cache=self.cache)
        elif self.mask is None:
            h = m.hidden(x, kv_cache=self.cache)  # positions continue after the cache; no mask at all
        else:
            h = m.hidden(x, attention_mask=self.mask[:, :self.cache.length + 1], position_ids=self.next_pos,
                         kv_cache=self.cache)
            self.next_pos = self.next_pos + 1
        return m.logits(h[:, -1])  # (N, V)


# --------------------------------------------------------------------------- generate


def _validate(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, *, max_new_tokens: int,
              do_sample: bool, temperature: float, top_k: int, top_p: float, repetition_penalty: float,
              num_beams: int, num_return_sequences: int, early_stopping: bool | str,
              streamer: Callable | None) -> None:
    cfg = model.config
    if cfg.arch == "encoder":
        raise _error("generation needs a decoder; this model is an encoder (use fill-mask, or train a decoder "
                     "or an encoder-decoder)")
    if max_new_tokens < 0:
        raise _error(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if not 0.0 < top_p <= 1.0:
        raise _error(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise _error(f"top_k must be >= 0 (0 turns it off), got {top_k}")
    if do_sample and temperature <= 0:
        raise _error(f"temperature must be > 0 when sampling, got {temperature} (use do_sample=False for greedy)")
    if repetition_penalty <= 0:
        raise _error(f"repetition_penalty must be > 0 (1.0 turns it off), got {repetition_penalty}")
    if num_beams < 1 or num_return_sequences < 1:
        raise _error(f"num_beams and num_return_sequences must be >= 1, got {num_beams} and "
                     f"{num_return_sequences}")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise _error(f"num_return_sequences ({num_return_sequences}) must be <= num_beams ({num_beams})")
    if num_beams == 1 and not do_sample and num_return_sequences > 1:
        raise _error(f"greedy decoding gives one sequence per prompt, not {num_return_sequences}: use "
                     "do_sample=True or num_beams >= num_return_sequences")
    if early_stopping not in (True, False, "never"):
        raise _error(f"early_stopping must be True, False or 'never', got {early_stopping!r}")
    if streamer is not None and num_beams > 1:
        raise _error("a streamer needs num_beams=1: beam search settles its tokens only at the end")
    if input_ids.ndim != 2:
        raise _error(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    if B == 0 or T == 0:
        raise _error(f"the prompt is empty (input_ids shape {tuple(input_ids.shape)})")
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise _error(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids shape "
                         f"{tuple(input_ids.shape)}")
        empty = (attention_mask == 0).all(1).nonzero().flatten().tolist()
        if empty:
            raise _error(f"the prompt is empty: row(s) {empty} of attention_mask have no real token")
        if cfg.arch == "decoder" and not bool(attention_mask[:, -1].all()):
            raise _error("decoder prompts must be left-padded: the last column of attention_mask must be all "
                         "ones (put the padding first)")
    learned = cfg.position == "learned"
    if cfg.arch == "decoder" and learned and T + max_new_tokens > cfg.max_seq_len:
        raise _error(f"prompt ({T} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context of "
                     f"{cfg.max_seq_len} tokens")
    if cfg.arch == "encoder-decoder" and learned and max(T, 1 + max_new_tokens) > cfg.max_seq_len:
        raise _error(f"the input ({T} tokens) or 1 + max_new_tokens ({1 + max_new_tokens}) exceeds the model's "
                     f"context of {cfg.max_seq_len} tokens")


@torch.no_grad()
def generate(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None, *, max_new_tokens: int = 50,
             do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             repetition_penalty: float = 1.0, num_beams: int = 1, length_penalty: float = 1.0,
             early_stopping: bool | Literal["never"] = False, num_return_sequences: int = 1,
             eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             decoder_start_token_id: int | None = None, seed: int | None = None,
             streamer: Callable[[Tensor], None] | None = None) -> Tensor:
    """Continue prompts with a decoder, or decode from an encoder-decoder, as Hugging Face ``generate()``.

    Greedy by default; ``do_sample`` samples (after ``temperature``, ``top_k``, ``top_p``); ``num_beams > 1``
    runs beam search (with ``do_sample``, beam sampling). ``repetition_penalty`` (CTRL) divides positive and
    multiplies negative scores of tokens already in the sequence (the decoder's, prompt included, padding
    excluded). A row stops at any of ``eos_token_id`` (kept in the output) and is then filled with
    ``pad_token_id`` (or the first EOS id when there is no pad id); generation stops early once every row
    has finished. The model is used as it is (call ``model.eval()`` first to turn dropout off).

    Args:
        model: a lmlab ``Transformer`` (decoder or encoder-decoder) with its ``config``.
        input_ids: (B, T) decoder prompts, left-padded; or the encoder's inputs (any padding).
        attention_mask: (B, T) 1 for real tokens, 0 for padding; None means no padding.
        max_new_tokens: the most tokens generated per row.
        num_return_sequences: sequences per input (samples, or the best beams), adjacent in the output.
        length_penalty: beam search scores a finished hypothesis by ``sum_logprob / n_generated ** it``.
        early_stopping: beam search stops an input once it has ``num_beams`` finished hypotheses (True), when
            no running beam can beat them by a heuristic (False), or by the canonical bound ("never").
        eos_token_id, pad_token_id, decoder_start_token_id: default to the model's own (:func:`generation_ids`:
            those of the Hugging Face config.json it was imported from, else those of the tokenizer it was saved
            with, as ``transformers`` reads its generation config); the decoder start is EOS for BART, pad for T5
            and lmlab's encoder-decoders.
        seed: seeds a ``torch.Generator`` used for all sampling; None uses torch's global generator.
        streamer: called with each new column of tokens (B * num_return_sequences,) as it is produced.

    Returns:
        (B * num_return_sequences, L) long tensor: decoders ``L = T + n`` (prompt included); encoder-decoders
        ``L = 1 + n`` starting with the start token; ``n <= max_new_tokens`` generated columns.

    Raises:
        InferenceError: an encoder-only model, an empty prompt or row, right-padded decoder prompts, a prompt
            plus ``max_new_tokens`` beyond learned positions, or an invalid option value.
    """
    saved = generation_ids(model)  # as transformers reads its generation config: what the caller leaves out
    eos_token_id = eos_token_id if eos_token_id is not None else saved.get("eos_token_id")
    pad_token_id = pad_token_id if pad_token_id is not None else saved.get("pad_token_id")
    if decoder_start_token_id is None and model.config.arch == "encoder-decoder":
        decoder_start_token_id = saved.get("decoder_start_token_id")
    _validate(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
              temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
              num_beams=num_beams, num_return_sequences=num_return_sequences, early_stopping=early_stopping,
              streamer=streamer)
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    attention_mask = None if attention_mask is None else attention_mask.to(device)
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # no padding: the fast path with no masks and implicit positions
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    fill = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    B = input_ids.shape[0]

    start = None
    prefix, prefix_mask = input_ids, attention_mask  # (B, L0): what the output starts with
    if model.config.arch == "encoder-decoder":
        first = next((i for i in (decoder_start_token_id, imported_decoder_start(model), pad_token_id)
                      if i is not None), None)
        if first is None:
            raise _error("an encoder-decoder needs decoder_start_token_id (or pad_token_id, its default)")
        start = torch.full((B, 1), first, dtype=torch.long, device=device)
        prefix, prefix_mask = start, None
    n_rows = num_beams if num_beams > 1 else num_return_sequences
    if max_new_tokens == 0:
        return prefix.repeat_interleave(num_return_sequences, 0)

    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    seen = None
    if repetition_penalty != 1.0:
        V = model.config.vocab_size
        ids = prefix if prefix_mask is None else prefix.masked_fill(~prefix_mask.bool(), V)  # padding -> V
        seen = torch.zeros(B, V + 1, dtype=torch.bool, device=device).scatter_(1, ids, True)[:, :V]
        seen = seen.repeat_interleave(n_rows, 0)  # (B * n_rows, V)
    eos_t = torch.tensor(eos, dtype=torch.long, device=device)
    options = dict(repetition_penalty=repetition_penalty, do_sample=do_sample, temperature=temperature,
                   top_k=top_k, top_p=top_p)
    prefix = prefix.repeat_interleave(n_rows, 0)
    # the one-token steps' weights, laid out for them; packing costs about as much as four steps (each reads
    # every weight once), so only from MIN_TOKENS_FOR_LAYOUT new tokens on (measured on the benchmark's GPT-2)
    long_enough = max_new_tokens >= MIN_TOKENS_FOR_LAYOUT
    with decode_layout(model.decoder, model.head, rows=B * n_rows) if long_enough else nullcontext():
        steps = _Steps(model, input_ids, attention_mask, start, max_new_tokens)
        logits = steps.prompt().repeat_interleave(n_rows, 0)  # (B * n_rows, V)
        steps.expand(n_rows)
        if num_beams > 1:
            return _beam_search(steps, logits, prefix, seen, eos_t, fill, num_beams=num_beams,
                                max_new_tokens=max_new_tokens, length_penalty=length_penalty,
                                early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                                generator=generator, options=options)
        return _decode(steps, logits, prefix, seen, eos_t, fill, max_new_tokens=max_new_tokens,
                       generator=generator, streamer=streamer, options=options)


def _decode(steps: _Steps, logits: Tensor, prefix: Tensor, seen: Tensor | None, eos: Tensor, fill: int, *,
            max_new_tokens: int, generator: torch.Generator | None, streamer: Callable | None,
            options: dict) -> Tensor:
    """Greedy or sampled decoding of N rows from the first ``logits`` (N, V); returns (N, L0 + n).

    Greedy decoding drops the rows that have finished from the batch (their cache rows too), so a batch of
    outputs of mixed lengths costs what its unfinished rows need. Sampling keeps every row, so that each draws
    from the generator as Hugging Face's does."""
    N, L0 = prefix.shape
    out = torch.full((N, L0 + max_new_tokens), fill, dtype=torch.long, device=prefix.device)
    out[:, :L0] = prefix
    running = torch.ones(N, dtype=torch.bool, device=prefix.device)  # rows that have not produced EOS
    rows = torch.arange(N, device=prefix.device)  # the rows of ``out`` still in the batch
    compact = not options["do_sample"] and len(eos) > 0
    n = max_new_tokens
    for i in range(max_new_tokens):
        scores = _process(logits.float(), seen, min_keep=1, **options)  # (N', V)
        if options["do_sample"]:
            tokens = torch.multinomial(scores.softmax(-1), 1, generator=generator).squeeze(1)  # (N',)
        else:
            tokens = scores.argmax(-1)
        if len(eos):
            tokens = tokens.masked_fill(~running, fill)
        out[rows, L0 + i] = tokens
        if streamer is not None:
            streamer(out[:, L0 + i])
        if len(eos):
            running &= ~torch.isin(tokens, eos)
            left = int(running.sum())  # the one sync per step
            if not left:
                n = i + 1
                break
        if i + 1 == max_new_tokens:
            break
        if seen is not None:
            seen.scatter_(1, tokens[:, None], True)
        if compact and left < len(rows):  # finished rows leave the batch
            keep = running.nonzero().squeeze(1)
            rows, running, tokens = rows[keep], running[keep], tokens[keep]
            seen = seen[keep] if seen is not None else None
            steps.keep(keep)
        logits = steps.next(tokens)
    return out[:, :L0 + n]


def _beam_search(steps: _Steps, logits: Tensor, prefix: Tensor, seen: Tensor | None, eos: Tensor, fill: int, *,
                 num_beams: int, max_new_tokens: int, length_penalty: float, early_stopping: bool | str,
                 num_return_sequences: int, generator: torch.Generator | None, options: dict) -> Tensor:
    """Hugging Face's vectorised beam search (``GenerationMixin._beam_search``) over B * num_beams rows.

    Per input it keeps ``num_beams`` running beams (scored by summed log-probs) and the ``num_beams`` best
    finished hypotheses (scored with the length penalty). Each step looks at the top ``K = max(2, 1 + n_eos)
    * num_beams`` continuations over all beams, so that enough of them do not end; a continuation that
    ends (EOS, or the length limit) counts as finished only if it is among the top ``num_beams``.
    """
    nb, dev = num_beams, prefix.device
    B, L0, V = prefix.shape[0] // nb, prefix.shape[1], logits.shape[-1]
    L = L0 + max_new_tokens
    K = max(2, 1 + len(eos)) * nb
    in_top = torch.arange(K, device=dev) < nb  # (K,) candidates that may finish
    running = torch.full((B, nb, L), fill, dtype=torch.long, device=dev)
    running[:, :, :L0] = prefix.view(B, nb, L0)
    finished = running.clone()  # (B, nb, L) best finished hypotheses, best first
    run_scores = torch.zeros(B, nb, device=dev)
    run_scores[:, 1:] = _NEG  # beams start identical: only the first one may be extended at the first step
    fin_scores = torch.full((B, nb), _NEG, device=dev)
    fin_done = torch.zeros(B, nb, dtype=torch.bool, device=dev)
    fin_len = torch.zeros(B, nb, dtype=torch.long, device=dev)  # generated tokens of each finished one
    improvable = torch.ones(B, 1, dtype=torch.bool, device=dev)  # can a running beam still beat them?
    offset = torch.arange(B, device=dev)[:, None] * nb  # (B, 1) first row of each input
    min_keep = len(eos) + 1 if len(eos) else 2  # keep a non-EOS continuation when sampling

    def take(t: Tensor, index: Tensor) -> Tensor:  # t (B, M, ...) rows ``index`` (B, k) of dim 1
        return t.take_along_dim(index.view(*index.shape, *[1] * (t.ndim - 2)), dim=1)

    for step in range(max_new_tokens):
        cur = L0 + step  # column of the token chosen now
        log_probs = _process(F.log_softmax(logits.float(), dim=-1), seen, min_keep=min_keep, **options)
        acc = (log_probs.view(B, nb, V) + run_scores[:, :, None]).view(B, nb * V)  # summed log-probs
        if options["do_sample"]:
            index = torch.multinomial(acc.softmax(-1), K, generator=generator)  # (B, K) without replacement
            top, order = acc.gather(1, index).sort(dim=-1, descending=True)
            index = index.gather(1, order)
        else:
            top, index = acc.topk(K)  # (B, K)
        beam, tokens = index // V, index % V  # (B, K) source beam and token of each continuation
        cand = take(running, beam)  # (B, K, L)
        cand[:, :, cur] = tokens
        ends = torch.isin(tokens, eos) if len(eos) else torch.zeros_like(tokens, dtype=torch.bool)
        if cur + 1 >= L:
            ends = torch.ones_like(ends)

        # the best num_beams continuations that do not end run on
        run_top = top + ends.float() * _NEG
        keep = run_top.topk(nb).indices  # (B, nb)
        running, run_scores, src = take(cand, keep), take(run_top, keep), take(beam, keep)

        # continuations that end among the top num_beams join the finished hypotheses if good enough
        just = ends & in_top
        scores = top / ((step + 1) ** length_penalty)
        scores += (fin_done.all(-1, keepdim=True) & (early_stopping is True)).float() * _NEG
        scores += (~improvable).float() * _NEG
        scores += (~just) * _NEG
        merged = torch.cat((fin_scores, scores), 1)  # (B, nb + K)
        best = merged.topk(nb).indices  # (B, nb)
        finished, fin_scores = take(torch.cat((finished, cand), 1), best), take(merged, best)
        fin_done = take(torch.cat((fin_done, just), 1), best)
        fin_len = take(torch.cat((fin_len, torch.full_like(tokens, step + 1)), 1), best)

        # stop when no input can improve, all are full (early_stopping), or nothing can continue
        length = max_new_tokens if early_stopping == "never" and length_penalty > 0.0 else step + 1
        best_running = run_scores[:, :1] / (length ** length_penalty)  # (B, 1)
        worst_finished = torch.where(fin_done, fin_scores.min(1, keepdim=True).values, _NEG)  # (B, nb)
        improvable = improvable & (best_running > worst_finished).any(-1, keepdim=True)
        if step + 1 == max_new_tokens or bool(~improvable.any() | (fin_done.all() & (early_stopping is True))
                                              | ends.all()):
            break
        rows = (src + offset).view(-1)  # (B * nb,) the rows the surviving beams come from
        steps.reorder(rows)
        next_tokens = running[:, :, cur].reshape(-1)
        if seen is not None:
            seen = seen.index_select(0, rows).scatter_(1, next_tokens[:, None], True)
        logits = steps.next(next_tokens)

    n_ret = num_return_sequences
    n = int(fin_len[:, :n_ret].max())
    return finished[:, :n_ret, :L0 + n].reshape(B * n_ret, L0 + n)


# --------------------------------------------------------------------------- text


def generation_ids(model: nn.Module) -> dict[str, int]:
    """The model's own ``eos_token_id``, ``pad_token_id`` and (encoder-decoders) ``decoder_start_token_id``: from
    the Hugging Face config.json it was imported from (``model.hf_config``), else those :func:`lmlab.load` and the
    ``AutoModelFor*`` classes set from its tokenizer (``model.generation_ids``); empty for a bare model."""
    out = {k: v for k, v in (getattr(model, "generation_ids", None) or {}).items() if v is not None}
    hf = getattr(model, "hf_config", None) or {}
    for key in ("eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if isinstance(hf.get(key), int) or (key == "eos_token_id" and isinstance(hf.get(key), list)):
            out[key] = hf[key]
    return out


def set_generation_ids(model: nn.Module, tokenizer) -> None:
    """Record on ``model`` the token ids generation defaults to, from the tokenizer it was saved with (see
    :func:`generation_ids`)."""
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    ids = {"eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}
    if model.config.arch == "encoder-decoder":
        ids["decoder_start_token_id"] = decoder_start_id(tok, model)
    model.generation_ids = {k: v for k, v in ids.items() if v is not None}



def generate_text(model: nn.Module, tokenizer, prompts: str | list[str], keep_special_tokens: bool = False,
                  **generate_kwargs) -> list[str]:
    """Generate from text prompts and return the decoded continuations.

    Prompts are encoded with ``tokenizer.encode`` (no special tokens added), left-padded for decoders and
    right-padded for encoder-decoders, and passed to :func:`generate` with ``generate_kwargs``.
    ``eos_token_id``, ``pad_token_id`` and (encoder-decoders) ``decoder_start_token_id`` default to the
    tokenizer's EOS, pad, and pad (else BOS, else EOS) ids.

    Returns:
        ``len(prompts) * num_return_sequences`` strings: the generated text only (not the prompt), cut at the
        first EOS, without special tokens but the sentinels a span-corruption model answers with (every special
        token with ``keep_special_tokens=True``; see :meth:`lmlab.tokenizer.Tokenizer.decode_generated`).

    Raises:
        InferenceError: as :func:`generate`; an empty prompt.
    """

    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise _error("no prompts given")
    encoded = [tokenizer.encode(p) for p in prompts]
    if not all(encoded):
        raise _error(f"the prompt is empty: {prompts[[bool(e) for e in encoded].index(False)]!r}")
    enc_dec = model.config.arch == "encoder-decoder"
    kwargs = dict(generate_kwargs)
    kwargs.setdefault("eos_token_id", tokenizer.eos_id)
    kwargs.setdefault("pad_token_id", tokenizer.pad_id)
    if enc_dec:  # the token lmlab's seq2seq objectives train the decoder from
        kwargs.setdefault("decoder_start_token_id", decoder_start_id(tokenizer, model))
    ids, mask = pad_batch(encoded, left=not enc_dec, pad=tokenizer.pad_id if tokenizer.pad_id is not None else 0)
    T = ids.shape[1]
    out = generate(model, ids, mask, **kwargs)
    tok = getattr(tokenizer, "lmlab_tokenizer", tokenizer)
    return [tok.decode_generated(cut_at_eos(row, kwargs["eos_token_id"]), keep_special_tokens)
            for row in out[:, 1 if enc_dec else T:].tolist()]


def cut_at_eos(row: list[int], eos: int | list[int] | None) -> list[int]:
    """A generated row up to its first stop token (``eos``: one id or several), without it."""
    stops = {eos} if isinstance(eos, int) else set(eos or [])
    return row[:next((j for j, t in enumerate(row) if t in stops), len(row))]
