"""``lmlab compare``: pretraining objectives side by side under equal compute, judged downstream, in one report.

Every cell (objective x seed pretraining, then row x task x seed fine-tuning and evaluation) is an ordinary run
directory; :func:`run_compare` skips the finished ones and resumes the interrupted ones, so rerunning continues.
"""

from lmlab.compare.cells import Cell, plan, run_compare, run_status
from lmlab.compare.config import CompareConfig, load_compare_config, parse_compare_config
from lmlab.compare.report import aggregate, mark_best, write_report

__all__ = ["Cell", "CompareConfig", "aggregate", "load_compare_config", "mark_best", "parse_compare_config", "plan",
           "run_compare", "run_status", "write_report"]
