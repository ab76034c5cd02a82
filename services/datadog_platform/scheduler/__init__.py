"""The scheduler service: control plane and public API.

Pipeline registry with full validation (``validation``), the planner that fuses
linear chains into stages (``planner``), the SQLite store (``store``), the run
manager that drives stages on executors (``runs``, through the ``Dispatcher``
protocol of ``domain`` implemented by ``executor_client``), and the gRPC servicer
(``servicer``) built by ``app.build_server``. Error reasons are listed in ``domain``.
"""
