"""Optimal-transport solvers of the pseudo-pairing (paper section 4.2), in torch.

* :mod:`.sinkhorn`: entropic OT, one problem (:func:`~.sinkhorn.entropic_ot`) or a padded batch of
  independent problems (:func:`~.sinkhorn.entropic_ot_batched`), balanced or unbalanced;
* :mod:`.reports`: their convergence reports and :class:`~.reports.MatchingConvergenceWarning`;
* :mod:`.fgw`: entropic fused Gromov-Wasserstein (the image-level plan), and the reading of eq. 3.

All computation is in torch (POT's torch backend for POT calls), on the device of the input tensors,
in float64 unless a ``dtype`` is given (float32 is fine on a GPU).

Relative epsilon
----------------
``epsilon`` (and ``unbalanced_tau``) in :class:`~isp_support.config.MatchConfig` are relative:
``eps_abs = epsilon * cost_scale`` where ``cost_scale`` is the mean of the cost the solver sees. For
plain OT this is the mean of the cost matrix (the patch level: per problem, the mean over that source
image's patches x its candidates). For FGW it is the mean of the fused cost of eq. 1 at the independent
coupling ``a b^T`` (:mod:`.fgw`), a fixed number that does not change between iterations. Both absolute
values are in the reports.

Convergence is never silently capped: every solve returns a report with ``converged``; a non-converged
solve issues a :class:`~.reports.MatchingConvergenceWarning` when ``warn=True``.

Nothing here knows about images, patches or graphs (:mod:`isp_support.pairing` builds on these solvers).
"""
