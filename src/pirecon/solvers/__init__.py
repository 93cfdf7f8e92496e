"""Classical reconstructions for any ``LinearOperator``: CGLS, Landweber, SIRT and TV by PDHG.

Every solver takes ``(y, operator)`` with ``y`` of shape
``(*batch, *operator.range_shape)``, solves all batch items at once on the
device and in the precision of ``y`` under ``torch.no_grad``, calls
``callback(k, x)`` after every iteration, shows a ``tqdm`` bar with
``progress=True`` and returns a ``SolverResult(image, iterations, history)``.
"""

from .iterative import SolverResult, cgls, landweber, sirt
from .tv import gradient, gradient_adjoint, tv_norm, tv_pdhg

__all__ = ["SolverResult", "cgls", "landweber", "sirt", "tv_pdhg", "gradient", "gradient_adjoint", "tv_norm"]
