"""Weights-only feature data: logit effects, decoder-cosine neighbours, UMAP map and clusters,
cross-layer neighbours. Deterministic for a given seed; chunked over features to bound memory."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from sae_atlas.compute.maps import cache_loads_without_refresh, fit, numba_cache_dir
from sae_atlas.compute.options import chunk_elements

CHUNK = 1024


def logit_effects(w_dec: torch.Tensor, out_map: torch.Tensor | None, w_u: torch.Tensor, n: int, histogram_bins: int = 0):
    """Top n positive and negative logits of W_dec @ M @ W_U per feature:
    (pos_token i32[F,n], pos_value f32[F,n], neg_token i32[F,n], neg_value f32[F,n]).
    With histogram_bins > 0, also each feature's logits over the whole vocabulary binned by
    `logit_histogram` from the same chunks of logits: (..., counts i32[F,bins], range f32[F,2]).
    Without an output map every array is empty (-1 tokens, zeros)."""
    f = w_dec.shape[0]
    n = min(n, w_u.shape[1])
    pos_t = np.full((f, n), -1, np.int32)
    neg_t = np.full((f, n), -1, np.int32)
    pos_v = np.zeros((f, n), np.float32)
    neg_v = np.zeros((f, n), np.float32)
    hist = (np.zeros((f, histogram_bins), np.int32), np.zeros((f, 2), np.float32)) if histogram_bins > 0 else ()
    if out_map is None:
        return (pos_t, pos_v, neg_t, neg_v) + hist
    directions = w_dec.float() @ out_map.to(w_dec.device)
    w_u = w_u.float().to(w_dec.device)
    step = max(1, chunk_elements(w_dec.device) // w_u.shape[1])  # rows of logits per chunk
    kernel = compiled(_logit_rows) if directions.device.type == "cpu" else None
    # One buffer for every chunk's logits: the same product (torch.mm) written where the last chunk's
    # were, which are still partly in cache (an 83 x 50,257 chunk at 2 threads: 8.5 -> 7.5 ms).
    buffer = torch.empty((min(step, f), w_u.shape[1]), dtype=directions.dtype, device=directions.device)
    for lo in range(0, f, step):
        rows = directions[lo : lo + step]
        logits = torch.mm(rows, w_u, out=buffer[: rows.shape[0]])
        if kernel is not None and _logit_chunk(kernel, logits, n, histogram_bins, lo, (pos_t, pos_v, neg_t, neg_v) + hist):
            continue
        v, t = logits.topk(n, dim=1)
        pos_t[lo : lo + step], pos_v[lo : lo + step] = t.cpu().numpy(), v.cpu().numpy()
        v, t = logits.topk(n, dim=1, largest=False)
        neg_t[lo : lo + step], neg_v[lo : lo + step] = t.cpu().numpy(), v.cpu().numpy()
        if hist:
            counts, value_range = logit_histogram(logits, histogram_bins)
            hist[0][lo : lo + step], hist[1][lo : lo + step] = counts.cpu().numpy(), value_range.cpu().numpy()
    return (pos_t, pos_v, neg_t, neg_v) + hist


def _logit_chunk(kernel, logits: torch.Tensor, n: int, bins: int, lo: int, out: tuple) -> bool:
    """One chunk of `logit_effects` on a CPU in one compiled pass per row (`_logit_rows`): the rows'
    top n both ways, their (min, max) and, with bins > 0, their histogram, written into `out`'s rows
    from lo. False (nothing written) when a row's top n has ties (torch.topk orders equal values its
    own way), a NaN or a zero minimum or maximum (whose sign torch's min/max pick their own way):
    then the caller computes the chunk with torch, as if this chunk had no kernel."""
    *top, counts, value_range, exact = _compiled_rows(kernel, logits, n, bins)
    if not exact.all():
        return False
    hi = lo + logits.shape[0]
    for target, rows in zip(out, top + [counts, value_range]):
        target[lo:hi] = rows
    return True


def _compiled_rows(kernel, logits: torch.Tensor, n: int, bins: int) -> tuple[np.ndarray, ...]:
    """`_logit_rows` over every row of `logits` (rows split over the torch threads): (pos_t, pos_v,
    neg_t, neg_v, counts i64, value_range, exact)."""
    values = logits.contiguous().numpy()
    rows_total = values.shape[0]
    out = (np.empty((rows_total, n), np.int32), np.empty((rows_total, n), np.float32),
           np.empty((rows_total, n), np.int32), np.empty((rows_total, n), np.float32),
           np.zeros((rows_total, max(bins, 1)), np.int64), np.empty((rows_total, 2), np.float32), np.zeros(rows_total, np.bool_))
    workers = max(1, min(torch.get_num_threads(), rows_total))
    cuts = [rows_total * w // workers for w in range(workers + 1)]
    # The values' bits as integers of their width (`_logit_rows`'s ordered keys), and per job a
    # two-slot scratch of that width seen both ways, to turn keys back into values.
    kind = np.int64 if values.dtype.itemsize == 8 else np.int32
    keys, low = values.view(kind), kind(np.iinfo(kind).max)
    shift, inf_key = kind(8 * values.dtype.itemsize - 1), np.array([np.inf], values.dtype).view(kind)[0]

    def job(r0: int, r1: int) -> tuple:
        scratch = np.zeros(2, kind)
        return (values, keys, low, shift, inf_key, scratch, scratch.view(values.dtype), n, bins, *out, r0, r1)

    run_jobs(kernel, [job(r0, r1) for r0, r1 in zip(cuts[:-1], cuts[1:]) if r1 > r0])
    return out


def _logit_rows(values, keys, low, shift, inf_key, scratch, scratch_value, n, bins,
                pos_t, pos_v, neg_t, neg_v, counts, value_range, exact, r0, r1):  # pragma: no cover (compiled)
    """Rows r0..r1 of a chunk of logits: the n largest values in descending order and the n smallest
    in ascending order with their columns, the (min, max), the counts of `logit_histogram` when
    bins > 0 (float64, no fused multiply-adds: the same bins as its elementwise version), and
    exact[r]: whether the row has no NaN, a nonzero min and max and distinct top values with no
    other value equal to the n-th (so that its top n are what torch.topk gives and its range what
    torch's min and max give)."""
    m = values.shape[1]
    # keys: each value's bits as an integer of its width, mapped (`k ^ ((k >> shift) & low)`, its
    # own inverse) to integers in the values' order: -0.0 just below 0.0, a NaN past either end
    # (inf_key: +inf's). scratch_value is scratch seen as values, to turn keys back into values.
    sub = np.zeros((4, max(bins, 1)), np.int64)  # the histogram's four partial counts
    bin_of = np.zeros(LOGIT_BLOCK, np.int32)
    slow = np.zeros(LOGIT_BLOCK, np.bool_)
    for r in range(r0, r1):
        nan = False
        first = np.inf  # the range of the values other than NaN
        last = -np.inf
        filled = 0
        # Blocks of values are first reduced to their (min, max) as ordered integers, which compile
        # to vector instructions; only a block with a value that may enter the top n (or a NaN, whose
        # bits map past both ends) is then taken value by value, as before. Once the heads are full,
        # nearly every block is passed over.
        for b0 in range(0, m, LOGIT_BLOCK):
            b1 = min(b0 + LOGIT_BLOCK, m)
            block = keys[r, b0:b1]  # a loop over a slice of its own compiles to vector instructions
            kmin = low
            kmax = ~low
            for c in range(block.shape[0]):
                k = block[c]
                k = k ^ ((k >> shift) & low)
                kmin = min(kmin, k)
                kmax = max(kmax, k)
            if kmin >= ~inf_key and kmax <= inf_key:  # no NaN: the block's range, from its keys
                scratch[0] = kmin ^ ((kmin >> shift) & low)
                scratch[1] = kmax ^ ((kmax >> shift) & low)
                lo = np.float64(scratch_value[0])
                hi = np.float64(scratch_value[1])
                if lo < first:
                    first = lo
                if hi > last:
                    last = hi
                if n == 0 or (filled >= n and hi <= pos_v[r, n - 1] and lo >= neg_v[r, n - 1]):
                    continue  # no value of the block enters either head
                clean = True
            else:
                clean = False
            for c in range(b0, b1):
                x = values[r, c]
                if x != x:
                    nan = True
                if not clean:
                    x64 = np.float64(x)
                    if x64 < first:
                        first = x64
                    if x64 > last:
                        last = x64
                if n > 0 and (filled < n or x > pos_v[r, n - 1]):  # into the sorted heads
                    j = min(filled, n - 1)
                    while j > 0 and pos_v[r, j - 1] < x:
                        pos_v[r, j], pos_t[r, j] = pos_v[r, j - 1], pos_t[r, j - 1]
                        j -= 1
                    pos_v[r, j], pos_t[r, j] = x, c
                if n > 0 and (filled < n or x < neg_v[r, n - 1]):
                    j = min(filled, n - 1)
                    while j > 0 and neg_v[r, j - 1] > x:
                        neg_v[r, j], neg_t[r, j] = neg_v[r, j - 1], neg_t[r, j - 1]
                        j -= 1
                    neg_v[r, j], neg_t[r, j] = x, c
                filled = min(filled + 1, n)
        value_range[r, 0], value_range[r, 1] = first, last
        ok = not nan and first != 0.0 and last != 0.0
        for j in range(1, n):
            if pos_v[r, j] == pos_v[r, j - 1] or neg_v[r, j] == neg_v[r, j - 1]:
                ok = False
        if first == last:
            first, last = first - 0.5, last + 0.5
        flat = first == last  # a constant row too large for +-0.5 (|v| >= 2^52): the middle bin too
        scale = bins / (last - first) if not flat else 0.0
        width = (last - first) / max(bins, 1)
        pos_kth = pos_v[r, n - 1] if n > 0 else np.float32(0.0)
        neg_kth = neg_v[r, n - 1] if n > 0 else np.float32(0.0)
        row = values[r]
        above = 0
        below = 0
        for c in range(m):  # vector instructions
            above += row[c] >= pos_kth
            below += row[c] <= neg_kth
        if bins > 0 and flat:
            for c in range(m):
                counts[r, bins // 2] += row[c] == row[c]  # NaN is in no bin
        elif bins > 0:
            # A block's bins are computed in vector instructions, then counted one by one into four
            # sub-histograms (consecutive values often share a bin: one count would wait on the
            # last). The few values near an edge of their bin, a NaN and a row with an infinite
            # value (whose quotient is NaN) are binned value by value, as np.histogram does.
            sub.fill(0)
            for b0 in range(0, m, LOGIT_BLOCK):
                block = row[b0 : b0 + LOGIT_BLOCK]
                nb = block.shape[0]
                for c in range(nb):
                    x64 = np.float64(block[c])
                    q = (x64 - first) * scale
                    index = np.floor(q)
                    slow[c] = not (abs(q - index - 0.5) <= 0.5 - 1e-4)  # near an edge, or NaN
                    bin_of[c] = np.int32(min(index, bins - 1)) if q == q else np.int32(0)
                for c in range(nb):
                    if not slow[c]:
                        sub[c & 3, bin_of[c]] += 1
                        continue
                    x = block[c]
                    if x != x:  # NaN is in no bin
                        continue
                    x64 = np.float64(x)
                    q = (x64 - first) * scale
                    if q != q:  # a row with an infinite value
                        continue
                    index = np.floor(q)
                    i = int(min(index, bins - 1))
                    if x64 < (last if i == bins else i * width + first):
                        i -= 1
                    if i != bins - 1 and x64 >= (last if i + 1 == bins else (i + 1) * width + first):
                        i += 1
                    if 0 <= i < bins:  # always (numba does not check the index)
                        counts[r, i] += 1
            for i in range(bins):
                counts[r, i] += sub[0, i] + sub[1, i] + sub[2, i] + sub[3, i]
        if n > 0 and (above != n or below != n):
            ok = False
        exact[r] = ok


# Values of a row of logits reduced together in `_logit_rows`'s first pass.
LOGIT_BLOCK = 64


def logit_histogram(logits: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's values in `bins` equal-width bins between its min and max, exactly as
    np.histogram(row.astype(np.float64), bins) counts them (edges i * (max - min) / bins + min in
    float64, bin i = [edge i, edge i+1), the last bin closed; a constant row lands in the middle
    bin of [v - 0.5, v + 0.5], and so does one too large to widen, |v| >= 2^52, where numpy divides
    by zero). NaN values are in no bin, and the bins span the other values. Returns (counts i32
    [R, bins], (min, max) f32 [R, 2]).

    The bin is the floor of the scaled value; only values within 1e-4 of a bin of an edge (where
    the quotient's rounding could put them on the wrong side) are compared with the edges
    themselves. On a CPU one compiled pass per row (`_logit_rows` without top logits, rows split
    over the torch threads), elsewhere the same arithmetic in float64 elementwise passes and one
    bincount."""
    kernel = compiled(_logit_rows) if logits.device.type == "cpu" and bins > 0 else None
    if kernel is None:
        return _logit_histogram_torch(logits, bins)
    counts, value_range, exact = _compiled_rows(kernel, logits.detach(), 0, bins)[4:]
    if exact.all():
        return torch.from_numpy(counts).int(), torch.from_numpy(value_range)
    return torch.from_numpy(counts).int(), torch.stack([logits.min(1).values, logits.max(1).values], 1).float()


_COMPILED: dict = {}


def compiled(fn):
    """fn compiled by numba (nogil, kept in numba's on-disk cache under numba_cache_dir(), as
    UMAP's code), or None where numba is not installed."""
    if fn not in _COMPILED:
        try:
            if "numba" not in sys.modules:
                os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
            import numba
        except ImportError:
            _COMPILED[fn] = None
        else:
            cache_loads_without_refresh()
            _COMPILED[fn] = numba.njit(cache=True, nogil=True)(fn)
    return _COMPILED[fn]


def run_jobs(kernel, jobs: list[tuple]) -> None:
    """kernel(*job) for each job: a compiled kernel (`compiled`, which releases the GIL) on a
    thread each, or in this thread when there is one job."""
    if len(jobs) == 1:
        kernel(*jobs[0])
    elif jobs:
        with ThreadPoolExecutor(len(jobs)) as pool:
            for done in [pool.submit(kernel, *job) for job in jobs]:
                done.result()


def _logit_histogram_torch(logits: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`logit_histogram` in float64 elementwise passes and one bincount, with no gathers over the
    matrix (for devices other than a CPU, or without numba)."""
    rows_total = logits.shape[0]
    counts = torch.zeros(rows_total * bins, dtype=torch.int64, device=logits.device)
    step = max(1, chunk_elements(logits.device) // 8 // max(logits.shape[1], 1))  # float64 temporaries
    for lo in range(0, rows_total, step):
        raw = logits[lo : lo + step]
        v = raw.to(torch.float64, copy=True)  # a copy even of float64 rows: it becomes the scaled value
        nan = v.isnan()
        first = torch.where(nan, torch.inf, v).min(1, keepdim=True).values  # the range of the values but NaN
        last = torch.where(nan, -torch.inf, v).max(1, keepdim=True).values
        flat = first == last
        first, last = torch.where(flat, first - 0.5, first), torch.where(flat, last + 0.5, last)
        too_flat = first == last  # a constant row too large for +-0.5 (|v| >= 2^52): the middle bin too
        q = torch.where(too_flat, bins // 2 + 0.5, v.sub_(first).mul_(bins / (last - first)))
        index = q.floor()
        near = torch.sub(q, index).sub_(0.5).abs_() > 0.5 - 1e-4
        index.clamp_(max=bins - 1)
        r, c = near.nonzero(as_tuple=True)
        if r.numel():
            value = raw[r, c].double()
            edges = torch.arange(bins + 1, dtype=torch.float64, device=v.device) * ((last - first) / bins) + first
            edges[:, -1] = last[:, 0]
            i = index[r, c].long()
            i -= (value < edges[r, i]).long()
            i += ((value >= edges[r, i + 1]) & (i != bins - 1)).long()
            index[r, c] = i.double()
        n = raw.shape[0]
        # NaN (a NaN value, or any value of a row with an infinite one) goes to a slot after each row's bins
        index = torch.where(index.isnan(), bins, index)
        index.add_(torch.arange(n, dtype=torch.float64, device=v.device).mul_(bins + 1).unsqueeze(1))
        slots = torch.bincount(index.view(-1).long(), minlength=n * (bins + 1)).view(n, bins + 1)
        counts.view(rows_total, bins)[lo : lo + n] += slots[:, :bins]
    return counts.view(rows_total, bins).int(), torch.stack([logits.min(1).values, logits.max(1).values], 1).float()


def unit_rows(w: torch.Tensor) -> torch.Tensor:
    w = w.float()
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cosine_neighbours(a: torch.Tensor, b: torch.Tensor, n: int, exclude_self: bool):
    """For each row of a, the n rows of b with the highest cosine: (index i32[Fa,n], cosine f32[Fa,n]).
    Slots beyond the available rows hold index -1, cosine 0."""
    a, b = unit_rows(a), unit_rows(b)
    fa, fb = a.shape[0], b.shape[0]
    index = np.full((fa, n), -1, np.int32)
    cosine = np.zeros((fa, n), np.float32)
    k = min(n, fb - 1 if exclude_self else fb)
    if k <= 0:
        return index, cosine
    for lo in range(0, fa, CHUNK):
        sims = a[lo : lo + CHUNK] @ b.T
        if exclude_self:
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + lo] = -float("inf")
        v, i = sims.topk(k, dim=1)
        index[lo : lo + CHUNK, :k] = i.cpu().numpy()
        cosine[lo : lo + CHUNK, :k] = v.cpu().numpy()
    return index, cosine


UMAP_MIN_FEATURES = 16


def map_method(n_features: int, pca_map: bool = False) -> str:
    """"umap", or "pca" below UMAP_MIN_FEATURES features (UMAP's spectral init is ill-posed) or on request."""
    return "pca" if pca_map or n_features < UMAP_MIN_FEATURES else "umap"


def umap_neighbour_count(n_features: int, n_neighbours: int) -> int:
    """UMAP's n_neighbors (the point itself included) for a map of n_features points."""
    return max(2, min(n_neighbours, n_features - 1))


def umap_request(
    w_dec: torch.Tensor, n_neighbours: int, seed: int, method: str = "umap", epochs: int = 200,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """The arguments of `maps.fit` for the UMAP map `umap_coords` gives (the same arguments)."""
    x = unit_rows(w_dec.cpu()).numpy().astype(np.float32)
    f = x.shape[0]
    k = umap_neighbour_count(f, n_neighbours)
    # Exact cosine neighbours by matrix product (umap-learn's own search is an O(F^2) loop below
    # 4,096 points and approximate above), in umap-learn's layout: each point first, at distance 0.
    index, cosine = knn if knn is not None else cosine_neighbours(torch.from_numpy(x), torch.from_numpy(x), k - 1, exclude_self=True)
    index, cosine = index[:, : k - 1], cosine[:, : k - 1]
    knn_index = np.concatenate([np.arange(f, dtype=np.int64)[:, None], index.astype(np.int64)], 1)
    knn_dist = np.concatenate([np.zeros((f, 1), np.float32), np.clip(1.0 - cosine, 0.0, 2.0)], 1)
    return {"x": x, "k": k, "seed": seed, "epochs": epochs, "knn_index": knn_index, "knn_dist": knn_dist}


def umap_coords(
    w_dec: torch.Tensor, n_neighbours: int, seed: int, method: str = "umap", epochs: int = 200,
    knn: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """2-D map of the decoder directions (on any device; the map is computed on the CPU): UMAP
    (cosine metric), or their first two principal components when method == "pca". `knn`: each row's nearest other rows by decoder cosine, as
    `cosine_neighbours(w_dec, w_dec, k - 1, exclude_self=True)` gives them (computed when None)."""
    if method == "pca":
        return _pca2(unit_rows(w_dec.cpu()).numpy().astype(np.float32))
    request = umap_request(w_dec, n_neighbours, seed, method, epochs, knn)
    # umap-learn's parallel numba loops share OpenMP with torch, and numba's OpenMP layer sets
    # OpenMP's thread count to numba's own on each parallel call: run them in torch's count and
    # give torch its count back after (else --threads stops holding after the first map).
    threads = torch.get_num_threads()
    try:
        return fit(**request, numba_threads=threads)
    finally:
        torch.set_num_threads(threads)


def _pca2(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.mean(0)
    out = np.zeros((x.shape[0], 2), np.float32)
    if x.shape[0] < 2:
        return out
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])[:, None]  # fixed signs
    proj = x @ comps.T
    out[:, : proj.shape[1]] = proj
    return out


def cluster_ids(coords: np.ndarray, seed: int, max_clusters: int = 20, iterations: int = 50) -> np.ndarray:
    """k-means (k-means++ init with a seeded generator) on the 2-D map; clusters numbered by
    descending size, then by centroid. k grows with sqrt(F/4), capped at max_clusters."""
    f = coords.shape[0]
    k = int(max(1, min(max_clusters, round(np.sqrt(f / 4)))))
    if f == 0:
        return np.zeros(0, np.int32)
    x = coords.astype(np.float64)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(f)]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        total = d2.sum()
        centres.append(x[rng.choice(f, p=d2 / total)] if total > 0 else x[rng.integers(f)])
    c = np.asarray(centres)
    labels = np.zeros(f, np.int64)
    for _ in range(iterations):
        labels = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.array([x[labels == j].mean(0) if np.any(labels == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    sizes = np.bincount(labels, minlength=k)
    order = sorted(range(k), key=lambda j: (-sizes[j], c[j][0], c[j][1]))
    remap = np.empty(k, np.int32)
    remap[order] = np.arange(k, dtype=np.int32)
    return remap[labels].astype(np.int32)

