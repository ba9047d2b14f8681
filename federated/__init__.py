"""One-shot federated learning on Flower: FuseFL, Co-Boosting and their baselines (docs/design.md §4).

See docs/federated.md. Algorithms are plain server programs + client actions
(:mod:`federated.protocol`), driven in-process (:mod:`federated.runner`) or as a Flower app
(:mod:`federated.flower`); both engines share the round loop and the algorithm registry in
:mod:`federated.driver`.
"""
