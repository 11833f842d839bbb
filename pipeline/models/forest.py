"""Random forest (scikit-learn), classes balanced per bootstrap sample.

Saved with skops (``forest.skops``: a zip of JSON and .npy arrays, no pickle executed on load).
skops refuses types it does not know; the forest needs exactly one more, ``sklearn.tree._tree.Tree``
(the compiled tree arrays), which is trusted by name here and nothing else is. The later export to
flat arrays reads the trees' ``tree_`` arrays from the loaded estimator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pipeline.models.base import Model

STATE_FILE = "forest.skops"
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


class ForestModel(Model):
    kind: ClassVar[str] = "forest"
    defaults: ClassVar[dict[str, Any]] = {
        # 100 trees of depth 8: the size whose compiled serving cost was measured (STACK.md, ~4-7 us)
        "n_estimators": 100,
        "max_depth": 8,
        "min_samples_leaf": 20,
        "max_features": 0.3,
        "max_samples": None,  # bootstrap rows per tree: None = n, a float = that share
        "n_jobs": 1,  # threads do not change the result (each tree has its own seed)
    }

    estimator: Any = None

    def _fit(self, X, y, X_val, y_val) -> None:
        from sklearn.ensemble import RandomForestClassifier

        p = self.params
        self.estimator = RandomForestClassifier(
            n_estimators=p["n_estimators"], max_depth=p["max_depth"], min_samples_leaf=p["min_samples_leaf"],
            max_features=p["max_features"], max_samples=p["max_samples"], class_weight="balanced_subsample",
            n_jobs=p["n_jobs"], random_state=self.seed,
        ).fit(X, y)
        self.fit_info["nodes"] = int(sum(tree.tree_.node_count for tree in self.estimator.estimators_))

    def _raw_proba(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(X)[:, 1]

    def _save_state(self, directory: Path) -> None:
        import skops.io

        skops.io.dump(self.estimator, directory / STATE_FILE)

    def _load_state(self, directory: Path) -> None:
        import skops.io

        self.estimator = skops.io.load(directory / STATE_FILE, trusted=TRUSTED_TYPES)
