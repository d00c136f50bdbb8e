"""The "MLflow gate report" button on the training DAG's ``evaluate_gate`` task instance.

How operator extra links work in Airflow 3 (3.3 here):

1. A link is a :class:`~airflow.sdk.BaseOperatorLink` listed in the *operator class's*
   ``operator_extra_links``. When the DAG is serialized, only ``{link name: xcom_key}`` is stored
   (``_operator_extra_links``), never the link's code.
2. On the **worker**, when the task instance finishes (success or failure), the task runner's
   ``finalize`` calls ``link.get_link(operator=task, ti_key=ti)`` for each of those links and
   pushes the result as an XCom under ``link.xcom_key`` (``_link_MlflowGateReportLink``).
3. The **API server** deserializes each link as an ``XComOperatorLink(name, xcom_key)`` that just
   reads that XCom back: ``GET /api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/links``
   answers ``{"extra_links": {"MLflow gate report": "<url>"}, "total_entries": 1}`` (``null`` when
   the link is empty), and the task instance page of the UI shows an "Extra Links" section with one
   button per non-empty http(s) link; a link to another origin (MLflow) opens in a new tab.

So the link needs no plugin registration and no Conveyor code on the API server. (Registering it
through a plugin's ``operator_extra_links`` would be wrong: plugin links are evaluated *on the API
server*, where the Task SDK's XCom client cannot run.)

A TaskFlow ``@task`` is a ``_PythonDecoratedOperator``, whose class has no links, so
:func:`gate_report_task` is ``@task`` with an operator subclass that carries
:class:`MlflowGateReportLink`. Its ``get_link`` reads the task's own return value (the gate
decision dict) and answers its ``report_url`` when that is an http(s) URL, otherwise ``""`` (no
button: the task failed before reporting, or the MLflow store is not served over HTTP).

This module is imported when DAG files are parsed: it imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import BaseOperatorLink
from airflow.sdk.bases.decorator import task_decorator_factory

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.bases.decorator import TaskDecorator
    from airflow.sdk.types import TaskInstanceKey

#: The button's label in the UI and the key of ``extra_links`` in the REST answer.
GATE_REPORT_LINK_NAME = "MLflow gate report"
#: The key of the gate task's return value that holds the MLflow run page.
REPORT_URL_KEY = "report_url"
RETURN_VALUE_KEY = "return_value"  # BaseXCom.XCOM_RETURN_KEY


def report_url_from(value: Any) -> str:
    """The ``report_url`` of a gate decision (the task's return value) if an http(s) URL, else ``""``."""
    if not isinstance(value, Mapping):
        return ""
    url = value.get(REPORT_URL_KEY)
    if not isinstance(url, str):
        return ""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return url if parts.scheme in ("http", "https") and parts.netloc else ""


class MlflowGateReportLink(BaseOperatorLink):
    """Link to the MLflow run that holds the gate report (``report_url`` of the task's return value).

    Evaluated on the worker when the task instance finishes; the API server serves the stored XCom
    (``xcom_key``, ``_link_MlflowGateReportLink``).
    """

    name = GATE_REPORT_LINK_NAME

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return report_url_from(XCom.get_value(ti_key=ti_key, key=RETURN_VALUE_KEY))


class GateReportPythonOperator(_PythonDecoratedOperator):
    """``@task``'s operator with the "MLflow gate report" extra link (used by :func:`gate_report_task`)."""

    operator_extra_links = (MlflowGateReportLink(),)


def gate_report_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """``@task`` (the same arguments) whose task instance gets the "MLflow gate report" button.

    The decorated function must return a dict with ``report_url`` (the gate's return value does).
    Use it bare (``@gate_report_task``) or with operator arguments (``@gate_report_task(pool=...)``).
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=GateReportPythonOperator,
        **kwargs,
    )
