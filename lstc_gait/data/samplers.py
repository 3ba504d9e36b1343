"""Batch samplers: random, P x K and multi-view P x K, sharded across DDP ranks.

Every sampler yields, per step, a list of item keys ``(position, sample_seed)`` that
``lstc_gait.data.TrainSequenceDataset`` accepts: ``position`` indexes the dataset's rows and
``sample_seed`` fixes the frame choice. The global batches of an epoch are a pure function of
``(seed, epoch)``, so a run resumed at ``(epoch, index)`` sees exactly the batches it would have
seen, whatever the number of DataLoader workers. With ``world_size`` ranks each rank takes its
contiguous slice of every global batch (identity-major order keeps whole identities together
when ``p`` is divisible by the world size).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

_SEED_MAX = 2**31 - 1


class BatchSampler:
    """Base class of the batch samplers: global batches of p x k training positions, sharded over ranks.

    Subclasses define ``_epoch_positions(rng) -> int (num_batches, p * k)`` positions. Every rank draws
    the same global batches from ``(seed, epoch)`` and takes its contiguous share, so DDP with W
    processes sees exactly the batches of one process.

    Args:
        labels: int (N,) class of each training position.
        p: Identities per global batch.
        k: Sequences per identity.
        seed: Sampling seed.
        rank: This process's rank.
        world_size: Processes sharing each global batch.
        views: (N,) view label of each position (for the multi-view sampler).

    Raises:
        ValueError: Bad p, k, rank or labels, or p * k not divisible by ``world_size``.

    Attributes:
        identity_batches: Class attribute: every batch holds k sequences of each of p identities, so a
            batch has positives for the triplet loss when k >= 2 and needs p training identities.
    """

    identity_batches: bool = False

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, views: Sequence[str] | None = None) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"sampler.p and sampler.k must be >= 1, got p={p}, k={k}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad rank {rank} for world size {world_size}")
        if (p * k) % world_size:
            raise ValueError(
                f"the global batch sampler.p x sampler.k = {p} x {k} = {p * k} is not divisible by the "
                f"number of processes ({world_size}); choose p and k so that p * k % {world_size} == 0")
        self.labels = np.asarray(labels, dtype=np.int64)
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise ValueError("the sampler needs a non-empty 1-D list of training labels")
        self.views = None if views is None else np.asarray([str(v) for v in views])
        if self.views is not None and len(self.views) != len(self.labels):
            raise ValueError(f"{len(self.views)} views for {len(self.labels)} labels")
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.batch_size = self.p * self.k
        self.local_batch_size = self.batch_size // self.world_size
        self.epoch = 0
        self.start = 0
        self._cache: tuple[int, np.ndarray] | None = None
        self.identities = np.unique(self.labels)
        self.by_identity = {int(c): np.flatnonzero(self.labels == c) for c in self.identities}

    # ------------------------------------------------------------------ epochs
    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch to iterate and the batch index to start from (resume mid-epoch)."""
        self.epoch, self.start = int(epoch), int(start)

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch])

    def _epoch_positions(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def global_batches(self, epoch: int) -> np.ndarray:
        """(num_batches, p*k, 2) int64 array of (position, sample_seed) for ``epoch``: all ranks agree."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = self._rng(epoch)
        positions = self._epoch_positions(rng)
        seeds = rng.integers(0, _SEED_MAX, size=positions.shape)
        batches = np.stack([positions, seeds], axis=-1).astype(np.int64)
        self._cache = (epoch, batches)
        return batches

    def num_batches(self, epoch: int) -> int:
        """Global batches in ``epoch``.

        Args:
            epoch: The epoch.

        Returns:
            The count.
        """
        return len(self.global_batches(epoch))

    def __len__(self) -> int:
        """Batches per epoch (iteration itself runs on across epochs until the trainer stops)."""
        return self.num_batches(self.epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        """This rank's share of every global batch from (epoch, start) on, epoch after epoch, endlessly:
        one DataLoader iterator (and one set of workers) serves the whole run."""
        lo = self.rank * self.local_batch_size
        hi = lo + self.local_batch_size
        epoch, start = self.epoch, self.start
        while True:
            batches = self.global_batches(epoch)
            for b in range(start, len(batches)):
                yield [(int(pos), int(s)) for pos, s in batches[b, lo:hi]]
            epoch, start = epoch + 1, 0

    def epoch_iter(self, epoch: int) -> Iterator[list[tuple[int, int]]]:
        """This rank's batches of one epoch only."""
        lo = self.rank * self.local_batch_size
        for batch in self.global_batches(epoch):
            yield [(int(pos), int(s)) for pos, s in batch[lo:lo + self.local_batch_size]]

    def state_dict(self) -> dict[str, int]:
        """The sampler's position.

        Returns:
            ``{"epoch", "start", "seed"}``.
        """
        return {"epoch": self.epoch, "start": self.start, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at a saved position.

        Args:
            state: From :meth:`state_dict`.
        """
        self.set_epoch(state["epoch"], state.get("start", 0))

    # ------------------------------------------------------------------ helpers
    def _check_identities(self) -> None:
        if len(self.identities) < self.p:
            raise ValueError(f"sampler.p={self.p} identities per batch, but the training set has only "
                             f"{len(self.identities)} identities; lower sampler.p")

    def _take(self, rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
        """n items of pool: without replacement when it is large enough, else every item then random extras."""
        if len(pool) >= n:
            return rng.choice(pool, size=n, replace=False)
        extra = rng.choice(pool, size=n - len(pool), replace=True)
        return rng.permutation(np.concatenate([pool, extra]))


class RandomSampler(BatchSampler):
    """p * k sequences per batch, uniformly without replacement within an epoch (no identity structure)."""

    def _epoch_positions(self, rng: np.random.Generator) -> np.ndarray:
        n = len(self.labels)
        if n < self.batch_size:  # fewer sequences than one batch: one batch with repeats
            return self._take(rng, np.arange(n), self.batch_size)[None]
        perm = rng.permutation(n)
        num = n // self.batch_size
        return perm[: num * self.batch_size].reshape(num, self.batch_size)


class PKSampler(BatchSampler):
    """p identities x k sequences per batch (the PK sampling of batch-hard triplet training, Hermans et al.
    2017); an epoch visits every identity once (n_ids // p batches)."""

    identity_batches = True

    def _sequences(self, rng: np.random.Generator, identity: int) -> np.ndarray:
        return self._take(rng, self.by_identity[identity], self.k)

    def _epoch_positions(self, rng: np.random.Generator) -> np.ndarray:
        self._check_identities()
        order = rng.permutation(self.identities)
        num = len(order) // self.p
        rows = []
        for b in range(num):
            ids = order[b * self.p:(b + 1) * self.p]
            rows.append(np.concatenate([self._sequences(rng, int(c)) for c in ids]))
        return np.stack(rows)


class MultiViewPKSampler(PKSampler):
    """P x K where each identity's k sequences come from as many different views as it has: k distinct
    views when it has at least k, otherwise every view once before any view repeats."""

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, views: Sequence[str] | None = None) -> None:
        if views is None:
            raise ValueError("sampler=multiview_pk needs the view of every training sequence")
        super().__init__(labels, p, k, seed, rank, world_size, views)
        assert self.views is not None
        self.view_groups: dict[int, list[np.ndarray]] = {}
        for c, idx in self.by_identity.items():
            vs = self.views[idx]
            self.view_groups[c] = [idx[vs == v] for v in np.unique(vs)]

    def _sequences(self, rng: np.random.Generator, identity: int) -> np.ndarray:
        groups = self.view_groups[identity]
        chosen_views: list[int] = []
        while len(chosen_views) < self.k:  # shuffled rounds over the views: spread before repeating
            chosen_views.extend(rng.permutation(len(groups)).tolist())
        chosen_views = chosen_views[: self.k]
        out = []
        used: dict[int, list[int]] = {}
        for g in chosen_views:
            pool = groups[g]
            taken = used.setdefault(g, [])
            free = np.setdiff1d(pool, taken) if taken else pool
            pick = int(rng.choice(free if len(free) else pool))
            taken.append(pick)
            out.append(pick)
        return np.asarray(out, dtype=np.int64)


SAMPLERS = {"random": RandomSampler, "pk": PKSampler, "multiview_pk": MultiViewPKSampler}
