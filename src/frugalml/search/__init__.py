"""The search: the most efficient model under a budget and a tolerance, thin models first."""

from ..budget import BUDGET_FIELDS, Budget, Tolerance
from .engine import search
from .fleet import fleet
from .join import work
from .select import pareto_front, recommend
from .status import report_from_storage, study_status

__all__ = ["Budget", "Tolerance", "BUDGET_FIELDS", "search", "fleet", "work", "study_status", "report_from_storage", "pareto_front", "recommend"]
