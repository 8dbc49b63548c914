"""Family statistics where the seed is the unit: one import for all of them.

Inputs are pairwise seed matrices X [M, M, ...] (X[a, m] = seed a measured against seed m;
the diagonal is ignored whatever it holds) or per-seed values [M, ...]. Pairs share seeds,
so a family mean over pairs is a U-statistic and pairs are never treated as independent.
The statistics live in one module per job; this one re-exports them:

- :mod:`harness.stats_common`: the result types (:class:`Estimate`, :class:`Comparison`,
  :class:`JointTest`, :class:`Underpowered`), option names and input checks;
- :mod:`harness.stats_jackknife`: family means, the seeds' jackknife pseudo-values, t
  intervals (:func:`seed_jackknife_t`, the default in analyses), functions of family means
  and their differences, one-sided bounds for non-inferiority;
- :mod:`harness.stats_bootstrap`: the Multi-Bootstrap (seeds resampled with replacement,
  pairs of distinct original seeds only) and where the minimum over layers lies;
- :mod:`harness.stats_permutation`: paired sign-flip and unpaired label-permutation tests on
  seed-level units, and why those units are pseudo-values and not row means;
- :mod:`harness.stats_multiplicity`: Holm, the joint max-T tests over every row of several
  metrics, and whether a test can reject at all (:func:`min_attainable_p`,
  :func:`seeds_needed`).

All randomness comes from an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

# Alternative, ALTERNATIVES, CI_METHODS and EXACT_LIMIT are used as ``stats.<name>`` too,
# though not in __all__.
from harness.stats_bootstrap import (bootstrap_argmin, bootstrap_argmin_per_seed, seed_bootstrap,
                                     seed_bootstrap_per_seed)
from harness.stats_common import (ALTERNATIVES, CI_METHODS, Alternative, Comparison, Estimate,
                                  JointTest, Underpowered)
from harness.stats_jackknife import (difference_interval, difference_lower_bound, family_mean,
                                     function_difference, function_pseudovalues,
                                     jackknife_t_function, seed_contributions, seed_jackknife_t,
                                     seed_pseudovalues, seed_t_per_seed)
from harness.stats_multiplicity import (holm, joint_paired, joint_unpaired, min_attainable_p,
                                        seeds_needed)
from harness.stats_permutation import (EXACT_LIMIT, paired_difference, paired_difference_per_seed,
                                       permutation_difference)

__all__ = [
    "Estimate",
    "Comparison",
    "family_mean",
    "seed_contributions",
    "seed_pseudovalues",
    "seed_bootstrap",
    "seed_bootstrap_per_seed",
    "seed_jackknife_t",
    "seed_t_per_seed",
    "jackknife_t_function",
    "paired_difference",
    "paired_difference_per_seed",
    "permutation_difference",
    "holm",
    "Underpowered",
    "JointTest",
    "min_attainable_p",
    "seeds_needed",
    "joint_paired",
    "joint_unpaired",
    "difference_interval",
    "function_pseudovalues",
    "function_difference",
    "difference_lower_bound",
    "bootstrap_argmin",
    "bootstrap_argmin_per_seed",
]
