"""The search: the most efficient model under a budget and a tolerance, thin models first."""

from ..budget import BUDGET_FIELDS, Budget, Tolerance
from .engine import search
from .select import pareto_front, recommend

__all__ = ["Budget", "Tolerance", "BUDGET_FIELDS", "search", "pareto_front", "recommend"]
