"""Family specs: YAML in, frozen dataclasses out, validated, fingerprinted.

A *family* is one training configuration trained under several seeds; YAML is its only
serialized form. This module is the one place the rest of the harness imports specs from;
the work lives in modules with one job each:

* :mod:`harness.spec`: the dataclasses and :class:`ConfigError`;
* :mod:`harness.spec_load`: YAML files, ``defaults`` and ``extends``;
* :mod:`harness.spec_validate`: defaults and strict validation (:func:`family_from_dict`);
* :mod:`harness.spec_optimizer`: the optimizer a spec names and its arguments;
* :mod:`harness.import_paths`: user code named by ``module:attribute``;
* :mod:`harness.fingerprint`: a family's identity.

Every bad input raises one :class:`ConfigError` naming the file and the dotted key::

    suites/paper.yaml: families.adamw.train.lr: expected a positive float, got 'fast'
"""

from __future__ import annotations

from harness.fingerprint import MODEL_VERSION, fingerprint
from harness.import_paths import import_path
from harness.spec import (FAMILY_KEYS, SUITE_KEYS, ConfigError, DataConfig, FamilyConfig, ModelConfig,
                          ProbeConfig, Suite, TrainConfig)
from harness.spec_load import load_family, load_suite
from harness.spec_optimizer import is_optimizer_factory, resolve_optimizer
from harness.spec_validate import family_from_dict

__all__ = ["FAMILY_KEYS", "MODEL_VERSION", "SUITE_KEYS", "ConfigError", "DataConfig", "FamilyConfig",
           "ModelConfig", "ProbeConfig", "Suite", "TrainConfig", "family_from_dict", "fingerprint",
           "import_path", "is_optimizer_factory", "load_family", "load_suite", "resolve_optimizer"]
