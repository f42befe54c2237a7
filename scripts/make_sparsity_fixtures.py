#!/usr/bin/env python3
"""Independent reference for the sparsity policies (dev-time only; tests need Node alone).

    python scripts/make_sparsity_fixtures.py

For every committed transformers reference (test/fixtures/references/<model>__<case>.json and
.safetensors) this loads the checkpoint under test/fixtures/models/<model> with transformers
(float32, CPU, eager attention), runs the decoder layer by layer by hand, and applies the
CoreMatching design doc (corematching.md, sections 1-5) with numpy
code that shares nothing with the TypeScript engine:

  - FFN activations a(x) = act(gate) * up are the input of each layer's mlp.down_proj
    (forward pre-hook);
  - the last prompt token's attention probabilities and the value states come from hooks on
    self_attn (eager attention returns the probabilities) and self_attn.v_proj;
  - token pruning: layers 0 .. L-1 run on the whole prompt, layers L .. N-1 on the kept tokens
    only, with their original position ids (RoPE positions are not renumbered) and a causal mask
    over the kept tokens;
  - without pruning the hand-run loop must reproduce the reference's last logits (checked).

Writes test/fixtures/sparsity/<model>__<case>.json: for each run the policy, its options, the
kept image tokens (grid indices), the image-token scores, and per decoder layer the core-neuron
set C_rho^beta(S_l) of the tokens that layer processed (neuronLayers 'all'), the counts f(n),
and the smallest relative margin of any token-level decision in that layer (how close the
layer came to a tie that float rounding could flip).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import LlavaForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "test" / "fixtures"
OUT = FIX / "sparsity"


# ----------------------------------------------------------------------------------------------
# the algorithm, written from the design doc with plain sorts


def ceil_count(fraction: float, n: int) -> int:
    """ceil(fraction * n), ignoring float noise (0.1 * 30 = 3.0000000000000004 -> 3)."""
    x = fraction * n
    r = round(x)
    return int(r) if abs(x - r) <= 1e-9 * max(1.0, abs(x)) else math.ceil(x)


def token_core(a: np.ndarray, rho: float) -> list[int]:
    """C_rho(x): the ceil(rho |A+|) largest positive activations, ties lower index first."""
    pos = [(float(v), n) for n, v in enumerate(a) if v > 0]
    pos.sort(key=lambda t: (-t[0], t[1]))
    return sorted(n for _, n in pos[: ceil_count(rho, len(pos))])


def counts_of(rows: np.ndarray, rho: float) -> np.ndarray:
    f = np.zeros(rows.shape[1], dtype=np.int64)
    for a in rows:
        for n in token_core(a, rho):
            f[n] += 1
    return f


def sentence_core(rows: np.ndarray, rho: float, beta: float) -> list[int]:
    """C_rho^beta(S): the ceil(beta D) largest f(n), ties lower index first, never f(n) = 0."""
    f = counts_of(rows, rho)
    ranked = sorted((n for n in range(len(f)) if f[n] > 0), key=lambda n: (-f[n], n))
    return sorted(ranked[: ceil_count(beta, len(f))])


def decision_margin(rows: np.ndarray, rho: float) -> float:
    """Smallest relative gap, over the tokens, between the k-th and (k+1)-th largest positive
    activation (the C_rho boundary), and of the smallest |a| against the row's largest (sign)."""
    margin = math.inf
    for a in rows.astype(np.float64):
        scale = float(np.abs(a).max()) or 1.0
        margin = min(margin, float(np.abs(a).min()) / scale)
        p = np.sort(a[a > 0])[::-1]
        k = ceil_count(rho, len(p))
        if 0 < k < len(p):
            margin = min(margin, float(p[k - 1] - p[k]) / float(p[k - 1]))
    return margin


def top_k(scores: list[float], k: int) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(order[:k])


def knee_keep(scores: list[float], min_keep: int) -> list[int]:
    d = sorted(scores, reverse=True)
    n = len(d)
    if n == 0 or d[0] == d[-1]:
        return list(range(n))
    x0, y0, x1, y1 = 0.0, d[0], float(n - 1), d[-1]
    den = math.hypot(x1 - x0, y1 - y0)
    dist = [abs((x1 - x0) * (y0 - y) - (x0 - i) * (y1 - y0)) / den for i, y in enumerate(d)]
    e = dist.index(max(dist))
    kept = [i for i, s in enumerate(scores) if s > d[e]]
    return kept if len(kept) >= min_keep else top_k(scores, min(min_keep, n))


def budget_keep(scores: list[float], budget, min_keep: int = 1) -> list[int]:
    if budget == "knee":
        return knee_keep(scores, min_keep)
    k = budget if float(budget).is_integer() else int(math.floor(budget * len(scores) + 0.5))
    return top_k(scores, int(k))


# ----------------------------------------------------------------------------------------------
# the model, run by hand


class Runner:
    def __init__(self, model_dir: Path):
        self.model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
        self.lm = self.model.model.language_model
        self.cfg = self.lm.config
        self.captured: dict = {}
        for l, layer in enumerate(self.lm.layers):
            layer.mlp.down_proj.register_forward_pre_hook(self._hook(l, "acts", lambda args, out: args[0]))
            layer.self_attn.register_forward_hook(self._hook(l, "probs", lambda args, out: out[1]))
            layer.self_attn.v_proj.register_forward_hook(self._hook(l, "values", lambda args, out: out))

    def _hook(self, layer, kind, pick):
        def hook(module, args, out=None):
            self.captured[(layer, kind)] = pick(args, out).detach()
        return hook

    @torch.no_grad()
    def embeds(self, ids: list[int], start: int, pixel_values: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        feats = self.model.get_image_features(
            pixel_values=pixel_values, vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        ).pooler_output
        feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats
        feats = feats.reshape(-1, feats.shape[-1])
        emb = self.model.get_input_embeddings()(torch.tensor([ids])).clone()
        emb[0, start:start + feats.shape[0]] = feats
        return emb

    @torch.no_grad()
    def prefill(self, emb: torch.Tensor, select=None, token_layer: int | None = None):
        """Runs every layer; before layer `token_layer`, `select(captured)` returns the prompt
        positions to keep. Returns the last position's logits and, per layer, the prompt positions
        it processed."""
        self.captured.clear()
        hidden = emb
        positions = torch.arange(emb.shape[1])
        seen = []
        for l, layer in enumerate(self.lm.layers):
            if token_layer is not None and l == token_layer:
                keep = torch.tensor(select(self.captured))
                hidden = hidden[:, keep]
                positions = positions[keep]
            t = hidden.shape[1]
            mask = torch.full((t, t), -torch.inf).triu(1)[None, None]
            pos_ids = positions[None]
            rope = self.lm.rotary_emb(hidden, pos_ids)
            hidden = layer(hidden, attention_mask=mask, position_ids=pos_ids, position_embeddings=rope)
            seen.append(positions.tolist())
        logits = self.model.lm_head(self.lm.norm(hidden[:, -1]))[0]
        return logits, seen

    def acts(self, layer: int) -> np.ndarray:
        return self.captured[(layer, "acts")][0].numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------------
# policies


def corematching_select(runner, o, start, v):
    def select(captured):
        a = captured[(o["tokenLayer"] - 1, "acts")][0].numpy()
        t = a.shape[0]
        image = set(range(start, start + v))
        ref = o["reference"]
        rows = {"last": [t - 1], "all": list(range(t)), "text": [p for p in range(t) if p not in image]}.get(ref)
        if rows is None:
            rows = [ref % t]
        r = set(sentence_core(a[rows], o["rho"], o["beta"]))
        scores = []
        for i in range(v):
            x = a[start + i]
            members = [n for n in range(len(x)) if x[n] > 0] if o["match"] == "active" else token_core(x, o["rho"])
            scores.append(float(sum(1 for n in members if n in r)))
        select.scores = scores
        select.margin = decision_margin(a[rows], o["rho"]) if o["match"] == "active" else decision_margin(a, o["rho"])
        select.kept = budget_keep(scores, o["budget"], o.get("minKeep", 1))
        return keep_positions(select.kept, start, v, t)
    return select


def fastv_select(o, start, v):
    def select(captured):
        probs = captured[(o["tokenLayer"] - 1, "probs")][0, :, -1].double().numpy()  # [heads, T]
        t = probs.shape[1]
        scores = probs[:, start:start + v].mean(axis=0).tolist()
        select.scores = scores
        select.kept = budget_keep(scores, o["budget"])
        return keep_positions(select.kept, start, v, t)
    return select


def projection_select(runner, o, start, v):
    def select(captured):
        l = o["tokenLayer"] - 1
        probs = captured[(l, "probs")][0, :, -1].double().numpy()  # [heads, T]
        heads, t = probs.shape
        kv = runner.cfg.num_key_value_heads
        hd = getattr(runner.cfg, "head_dim", None) or runner.cfg.hidden_size // runner.cfg.num_attention_heads
        values = captured[(l, "values")][0].double().numpy().reshape(t, kv, hd)  # [T, kv, hd]
        scores = np.zeros(v)
        for h in range(heads):
            vals = values[:, h // (heads // kv)]  # repeat_kv: query head h reads kv head h // group
            alpha = probs[h]
            o_m = alpha @ vals
            on = np.linalg.norm(o_m)
            for i in range(v):
                vi = vals[start + i]
                vn = np.linalg.norm(vi)
                if on > 0 and vn > 0:
                    scores[i] += alpha[start + i] * vn * float(vi @ o_m) / (vn * on)
        select.scores = scores.tolist()
        select.kept = budget_keep(select.scores, o["budget"])
        return keep_positions(select.kept, start, v, t)
    return select


def pool_grid(height: int, width: int, k: int) -> tuple[int, int]:
    """The rows x cols output grid with rows * cols = k (else the largest smaller count that has
    one) fitting the grid, closest to its aspect ratio in log terms, ties to more rows."""
    for count in range(min(k, height * width), 0, -1):
        pairs = [(r, count // r) for r in range(1, count + 1) if count % r == 0 and r <= height and count // r <= width]
        if pairs:
            return min(pairs, key=lambda p: (round(abs(math.log(p[0] / p[1]) - math.log(height / width)), 12), -p[0]))
    raise ValueError("no grid")


def pool_embeds(emb: torch.Tensor, o, start: int, v: int):
    """The prompt embeddings with the image grid average-pooled (torch's adaptive_avg_pool2d):
    each pooled token written at its window's first (top-left) token, and the grid indices kept."""
    side = math.isqrt(v)
    k = o["budget"] if isinstance(o["budget"], int) else int(round(o["budget"] * v))
    rows, cols = pool_grid(side, side, k)
    grid = emb[0, start:start + v].reshape(side, side, -1).permute(2, 0, 1)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grid[None].double(), (rows, cols))[0].float()  # [hidden, rows, cols]
    kept = [(i * side // rows) * side + (j * side // cols) for i in range(rows) for j in range(cols)]
    out = emb.clone()
    for n, g in enumerate(kept):
        out[0, start + g] = pooled[:, n // cols, n % cols]
    return out, kept


@torch.no_grad()
def pooled_greedy(runner, emb, kept, start, v, ids, steps: int):
    """Greedy tokens after pooling: every step re-runs the hand-run decoder on the prompt (image
    tokens outside `kept` removed before layer 0) plus the tokens so far, at their positions."""
    tokens, margins = [], []
    for _ in range(steps):
        extra = runner.model.get_input_embeddings()(torch.tensor([tokens], dtype=torch.long)) if tokens else emb[:, :0]
        full = torch.cat([emb, extra], 1)
        t = full.shape[1]
        logits, _ = runner.prefill(full, lambda captured: keep_positions(kept, start, v, t), 0)
        top = torch.topk(logits, 2)
        tokens.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
    return tokens, margins


def keep_positions(kept, start, v, t):
    return [p for p in range(t) if p < start or p >= start + v or (p - start) in kept]


# ----------------------------------------------------------------------------------------------


def runs_for(num_layers: int):
    base = dict(rho=0.2, beta=0.4, reference="last", match="active", minKeep=1, neuronLayers="all")
    runs = [
        ("corematching", dict(base, tokenLayer=1, budget="knee")),
        ("corematching", dict(base, tokenLayer=1, budget=8)),
        ("corematching", dict(base, tokenLayer=1, budget=0.25)),
        ("corematching", dict(base, tokenLayer=1, budget="knee", match="core", reference="text", rho=0.5, beta=0.5)),
        ("corematching-neurons", dict(base, tokenLayer=1, budget="knee")),
        ("fastv", dict(base, tokenLayer=1, budget=8)),
        ("projection", dict(base, tokenLayer=1, budget=8)),
    ]
    runs.append(("pool", dict(base, tokenLayer=1, budget=0.25)))
    runs.append(("pool", dict(base, tokenLayer=1, budget=6)))
    if num_layers >= 3:
        runs.append(("corematching", dict(base, tokenLayer=2, budget="knee", reference=-2)))
        runs.append(("fastv", dict(base, tokenLayer=2, budget="knee")))
        runs.append(("projection", dict(base, tokenLayer=2, budget=0.25)))
    return runs


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    refs = sorted(p for p in (FIX / "references").glob("*__*.json"))
    runners: dict[str, Runner] = {}
    for ref_path in refs:
        ref = json.loads(ref_path.read_text())
        model = ref["model"]
        if model not in runners:
            runners[model] = Runner(FIX / "models" / model)
        runner = runners[model]
        tensors = load_file(str(ref_path.with_suffix(".safetensors")))
        ids, start, v = ref["inputIds"], ref["imageTokenStart"], ref["imageTokens"]
        emb = runner.embeds(ids, start, tensors["pixel_values"])
        logits, _ = runner.prefill(emb)
        err = float((logits - tensors["last_logits"]).norm() / tensors["last_logits"].norm())
        assert err < 1e-4, f"{ref_path.name}: hand-run decoder differs from the reference logits ({err})"

        n = len(runner.lm.layers)
        out_runs = []
        for policy, o in runs_for(n):
            if policy == "pool":
                pooled, kept = pool_embeds(emb, o, start, v)
                tokens, margins = pooled_greedy(runner, pooled, kept, start, v, ids, 4)
                out_runs.append(dict(policy=policy, options=o, keptImageTokens=kept, greedyTokens=tokens, greedyMargins=margins, layers={}))
                continue
            if policy == "corematching-neurons":
                select, token_layer = None, None
            elif policy == "corematching":
                select, token_layer = corematching_select(runner, o, start, v), o["tokenLayer"]
            elif policy == "fastv":
                select, token_layer = fastv_select(o, start, v), o["tokenLayer"]
            else:
                select, token_layer = projection_select(runner, o, start, v), o["tokenLayer"]
            _, seen = runner.prefill(emb, select, token_layer)
            layers = {}
            for l in range(n):
                a = runner.acts(l)
                assert a.shape[0] == len(seen[l])
                layers[str(l)] = dict(
                    coreNeurons=sentence_core(a, o["rho"], o["beta"]),
                    counts=counts_of(a, o["rho"]).tolist(),
                    margin=decision_margin(a, o["rho"]),
                )
            run = dict(policy=policy, options=o, layers=layers)
            if select is not None:
                run.update(keptImageTokens=select.kept, imageScores=select.scores)
                if hasattr(select, "margin"):
                    run["scoreMargin"] = select.margin
            else:
                run["keptImageTokens"] = list(range(v))
            out_runs.append(run)
        out = dict(
            model=model, reference=ref_path.name, photo=ref["photo"], prompt=ref["prompt"], question=ref["question"],
            rawPrompt=ref["rawPrompt"], inputIds=ids, imageTokenStart=start, imageTokens=v,
            numLayers=n, intermediateSize=runner.cfg.intermediate_size, runs=out_runs,
        )
        dest = OUT / ref_path.name
        dest.write_text(json.dumps(out, separators=(",", ":")) + "\n")
        kept = ", ".join(f"{r['policy']}/{r['options']['budget']}:{len(r['keptImageTokens'])}" for r in out_runs)
        print(f"{dest.relative_to(ROOT)}  logits err {err:.1e}  kept {kept}")


if __name__ == "__main__":
    main()
