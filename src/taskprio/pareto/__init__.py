"""Pareto-front learning: one training run gives a model for every trade-off between tasks.

A *preference* α is a point of the simplex over the m tasks; a Pareto-front model maps it to
a network θ(α) (:class:`ParetoModel`). Three methods, registered by name
(:func:`available_pareto_methods`), build and train such models:

- ``lorpman``, :class:`LORPMAN`: one main network plus low-rank task matrices per layer,
  W(α) = W0 + s·Σ_i α_i B_i A_i (:class:`LowRankParetoModel`, :class:`LowRankLayer`);
- ``pamal``, :class:`PaMaL`: m full networks, θ(α) = Σ_i α_i θ_i (:class:`PaMaLModel`);
- ``cosmos``, :class:`COSMOS`: α as an extra input and a cosine penalty (:class:`COSMOSModel`).

:func:`train_pareto` trains one on a benchmark and evaluates the front on the test split
(:func:`evaluation_preferences`); :func:`hypervolume` (``moocore``) scores it and
:func:`plot_front` draws it. ``docs/pareto.md`` gives the conventions and measured numbers.

>>> import torch, taskprio.pareto as pareto
>>> pareto.available_pareto_methods()
['cosmos', 'lorpman', 'pamal']
>>> round(pareto.hypervolume([[0.9, 0.5], [0.6, 0.8]], [0.0, 0.0], maximize=True), 12)
0.63
"""

from taskprio.pareto._config import (
    load_pareto_config,
    parse_pareto_config,
    parse_preference_text,
    simplex_preferences,
)
from taskprio.pareto._cosmos import COSMOS, COSMOSModel, cosmos_loss, widen_input
from taskprio.pareto._evaluate import (
    LOSS_REFERENCES,
    METRIC_REFERENCES,
    FrontEvaluation,
    evaluate_front,
    loss_reference_point,
    metric_reference_point,
    recalibrated_norms,
)
from taskprio.pareto._hypervolume import evaluation_preferences, hypervolume, simplex_grid
from taskprio.pareto._layers import (
    LOW_RANK_INITS,
    LowRankLayer,
    add_low_rank,
    low_rank_layers,
    using_preference,
)
from taskprio.pareto._lorpman import (
    LORPMAN,
    LowRankParetoModel,
    choose_task_subset,
    remove_from_optimizer,
)
from taskprio.pareto._method import (
    PARETO_METHODS,
    MultiForwardMethod,
    Objective,
    ParetoMethod,
    available_pareto_methods,
    get_pareto_method,
    sample_dirichlet,
)
from taskprio.pareto._model import AtPreference, ParameterCount, ParetoModel, check_preference
from taskprio.pareto._networks import NORM_FREE_MODELS, NormFreeLeNet, norm_free_model
from taskprio.pareto._pamal import PaMaL, PaMaLModel
from taskprio.pareto._plots import plot_front
from taskprio.pareto._regularizers import (
    low_rank_cosines,
    multi_forward_regularizer,
    orthogonality_penalty,
)
from taskprio.pareto._train import ParetoRun, train_pareto

__all__ = [
    "COSMOS",
    "LORPMAN",
    "LOSS_REFERENCES",
    "LOW_RANK_INITS",
    "METRIC_REFERENCES",
    "NORM_FREE_MODELS",
    "PARETO_METHODS",
    "AtPreference",
    "COSMOSModel",
    "FrontEvaluation",
    "LowRankLayer",
    "LowRankParetoModel",
    "MultiForwardMethod",
    "NormFreeLeNet",
    "Objective",
    "PaMaL",
    "PaMaLModel",
    "ParameterCount",
    "ParetoMethod",
    "ParetoModel",
    "ParetoRun",
    "add_low_rank",
    "available_pareto_methods",
    "check_preference",
    "choose_task_subset",
    "cosmos_loss",
    "evaluate_front",
    "evaluation_preferences",
    "get_pareto_method",
    "hypervolume",
    "load_pareto_config",
    "loss_reference_point",
    "low_rank_cosines",
    "low_rank_layers",
    "metric_reference_point",
    "multi_forward_regularizer",
    "norm_free_model",
    "orthogonality_penalty",
    "parse_pareto_config",
    "parse_preference_text",
    "plot_front",
    "recalibrated_norms",
    "remove_from_optimizer",
    "sample_dirichlet",
    "simplex_grid",
    "simplex_preferences",
    "train_pareto",
    "using_preference",
    "widen_input",
]
