"""Noticing streamer Jobs that ended without their worker saying so (kubernetes runtime).

A live stream's ``konfer streamer`` reports its own state to the api; a streamer that never
runs (image pull error, crash before its first report, deadline exceeded) cannot, and its
stream would stay ``pending`` or ``streaming`` for good. ``StreamerJobWatcher`` lists and
watches the streamer Jobs of ``KONFER_KUBERNETES_NAMESPACE`` and their pods (the labels
``runtime.kubernetes.streamer_job`` sets), and for each Job that failed or ended
(``streamer_job_outcome``) and each pod stuck on an image pull or config error past
``KONFER_KUBERNETES_STREAMER_START_TIMEOUT_SECONDS`` (``streamer_pod_stuck``; the Job
itself would only fail at its deadline, hours later) hands the verdict to a callback
(``services.streaming.streamer_job_ended``, wired by ``app.attach_sfu``). That callback
changes the stream only while it is still active, so every api replica may run a watcher
and a stream that already finished keeps its state.

Started by ``runtime.kubernetes.KubernetesRecorderRuntime.watch_streamers`` and stopped by
its ``close`` (app lifespan). Watches resume from the last resourceVersion seen (bookmarks
included); a 410 Gone (the version was compacted away) re-lists at once; other errors
retry after a bounded, jittered exponential backoff and re-list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client.core import CounterMetricFamily

from konfer.core.jobstatus import (
    STUCK_WAITING_REASONS,
    first_container_waiting,
    job_view,
    last_terminated,
    termination_summary,
)

log = logging.getLogger(__name__)

STREAMER_SELECTOR = "app.kubernetes.io/component=streamer,app.kubernetes.io/managed-by=konfer-api"
STREAM_LABEL = "konfer.io/stream"
REASON_LIMIT = 1000  # live_streams.reason
_DETAIL_LIMIT = 400
STOPPED_WITHOUT_REPORT = (
    "STOPPED_WITHOUT_REPORT: the streamer's Job was suspended and its pod ended before "
    "the streamer's final report; the last segments may be missing"
)


@dataclass(frozen=True, slots=True)
class StreamerEnd:
    """How a streamer Job ended, as the stream's status and reason."""

    status: str  # "failed" or "stopped"
    reason: str | None


class WatchExpired(Exception):
    """The API server no longer has the resourceVersion the watch resumed from (410)."""


def _detail(message: str) -> str:
    """A termination message in one line: the summary's reason, else its last log line."""
    summary = termination_summary(message)
    if summary is not None:
        return str(summary.get("reason") or "")
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= _DETAIL_LIMIT else text[: _DETAIL_LIMIT - 1] + "…"


def streamer_job_outcome(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]] = ()
) -> StreamerEnd | None:
    """The end of a streamer Job, or None while it may still run.

    Failed: ``STREAMER_FAILED: <Job condition reason>: <its message>``, then how the
    container ended when a pod says so (exit code, reason and the streamer's own reason
    from its termination summary, or the last log line Kubernetes kept). Complete: the
    streamer exited 0, which it does only after its final report; if that report never
    arrived the summary still says ``stopped``, and without one the stream failed.
    Suspended (how the api stops a stream) with no pod left: stopped, with a note when the
    streamer never confirmed it.
    """
    view = job_view(job)
    ended = last_terminated(pods)
    if view.failed_reason is not None:
        reason = f"STREAMER_FAILED: {view.failed_reason}"
        if view.failed_message:
            reason += f": {view.failed_message}"
        if ended is not None:
            reason += f"; the streamer exited with code {ended.exit_code}"
            if ended.reason:
                reason += f" ({ended.reason})"
            detail = _detail(ended.message)
            if detail:
                reason += f": {detail}"
        return StreamerEnd("failed", _limit(reason))
    if view.complete:
        summary = termination_summary(ended.message if ended else None) or {}
        if summary.get("phase") == "stopped":
            return StreamerEnd("stopped", None)
        if summary.get("phase") == "failed" and summary.get("reason"):
            return StreamerEnd("failed", _limit(str(summary["reason"])))
        return StreamerEnd(
            "failed", "STREAMER_EXITED: the streamer's Job completed without a final report"
        )
    if view.suspended and view.suspend_applied and view.active == 0:
        # A stop suspends the Job; its pod is gone now. A streamer that reported its end
        # already left the stream stopped; one that did not cannot any more.
        summary = termination_summary(ended.message if ended else None) or {}
        if summary.get("phase") == "failed" and summary.get("reason"):
            return StreamerEnd("failed", _limit(str(summary["reason"])))
        note = None if summary.get("phase") == "stopped" else STOPPED_WITHOUT_REPORT
        return StreamerEnd("stopped", note)
    return None


def _limit(text: str) -> str:
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def streamer_pod_stuck(
    pod: Mapping[str, Any], now: datetime, timeout: float
) -> tuple[StreamerEnd | None, float | None]:
    """A streamer pod waiting on something that will not fix itself (image pull, bad
    config): its stream's end once it has waited ``timeout`` seconds since the pod was
    made, else how many seconds are left; (None, None) for a pod that is not stuck.

    The Job itself never fails for these (its pod just stays Pending until the Job's
    deadline, hours away), so without this the stream would wait that long."""
    waiting = first_container_waiting(pod)
    if waiting is None or waiting[0] not in STUCK_WAITING_REASONS:
        return None, None
    created = (pod.get("metadata") or {}).get("creationTimestamp")
    since = datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else now
    left = timeout - (now - since).total_seconds()
    if left > 0:
        return None, left
    reason, message = waiting
    text = f"STREAMER_FAILED: {reason}: {message or reason} (waited {int(timeout)}s)"
    return StreamerEnd("failed", _limit(text)), None


OnEnd = Callable[[str, StreamerEnd], Awaitable[bool]]
Handler = Callable[[Mapping[str, Any]], Awaitable[None]]


class WatchedList:
    """One resource's list-then-watch loop: resourceVersion kept from every event and
    bookmark, a re-list at once on 410 Gone, a jittered backoff (capped) and a re-list
    on any other error. ``handle`` sees every object listed or added/modified."""

    def __init__(
        self,
        name: str,
        call: Callable[..., Awaitable[Any]],
        handle: Handler,
        *,
        forget: Callable[[Mapping[str, Any]], None] | None = None,
        watch_timeout_seconds: int = 300,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        self.name = name
        self.call = call  # list_namespaced_<kind> of a fresh API object, bound to its namespace
        self.handle = handle
        self.forget = forget
        self.watch_timeout_seconds = watch_timeout_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.resource_version: str | None = None
        self.lists = 0  # full lists made (the first, then one per expiry or error)
        self.watches = 0  # watch requests opened
        self.expired = 0  # 410 Gone answers

    async def run(self) -> None:
        backoff = 0.5
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                await self._watch()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except WatchExpired:
                self.expired += 1
                self.resource_version = None
                log.info("a watch of streamer %s expired; listing again", self.name)
            except Exception as exc:
                self.resource_version = None  # what was missed is seen by the next list
                delay = backoff * (0.5 + random.random())  # noqa: S311 - jitter only
                log.warning(
                    "watching streamer %s failed; retrying",
                    self.name,
                    extra={"error": repr(exc), "retry_in": round(delay, 2)},
                )
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self.backoff_max_seconds)

    async def _list(self) -> None:
        token: str | None = None
        items: list[dict[str, Any]] = []
        version: str | None = None
        while True:
            page = await _json(
                await self.call(
                    label_selector=STREAMER_SELECTOR,
                    limit=500,
                    _continue=token,
                    _preload_content=False,
                )
            )
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            version, token = meta.get("resourceVersion"), meta.get("continue")
            if not token:
                break
        self.lists += 1
        self.resource_version = str(version or "") or None
        for obj in items:
            await self.handle(obj)

    async def _watch(self) -> None:
        self.watches += 1
        response = await self.call(
            label_selector=STREAMER_SELECTOR,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=self.watch_timeout_seconds,
            _preload_content=False,
            _request_timeout=self.watch_timeout_seconds + 30,
        )
        try:
            if response.status == 410:
                raise WatchExpired
            if response.status >= 300:
                raise ApiException(status=response.status, reason=await response.text())
            while True:
                line = await response.content.readline()
                if not line:
                    return  # the server ended the watch (its timeout): resume
                await self._event(json.loads(line))
        finally:
            response.release()

    async def _event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj: Mapping[str, Any] = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired
            raise ApiException(status=obj.get("code") or 500, reason=str(obj.get("message")))
        if kind in ("ADDED", "MODIFIED"):
            await self.handle(obj)
        elif kind == "DELETED" and self.forget is not None:
            self.forget(obj)
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)


class StreamerJobWatcher:
    """Follow the namespace's streamer Jobs and their pods; hand each stream whose Job
    ended, or whose pod is stuck past ``start_timeout_seconds``, to ``on_end`` once (per
    object and process: the callback itself is conditional, so a replay after a restart
    or on another replica changes nothing). A stuck pod's Job is then suspended, so the
    kubelet stops pulling and the Job stays as the record of the run."""

    def __init__(
        self,
        api: Callable[[], Awaitable[client.ApiClient]],
        namespace: str,
        on_end: OnEnd,
        *,
        watch_timeout_seconds: int = 300,
        start_timeout_seconds: float = 120.0,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.on_end = on_end
        self.start_timeout_seconds = start_timeout_seconds
        self.handled: set[str] = set()
        self._rechecks: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        options: dict[str, Any] = {
            "watch_timeout_seconds": watch_timeout_seconds,
            "backoff_max_seconds": backoff_max_seconds,
        }
        #: Streams this replica ended, by the status it gave them (``/metrics``).
        self.ended: Counter[str] = Counter()
        self.jobs = WatchedList("Jobs", self._list_jobs, self._job, forget=self._forget, **options)
        self.pods = WatchedList("pods", self._list_pods, self._pod, forget=self._forget, **options)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.jobs.run(), name="streamer-job-watch"),
                asyncio.create_task(self.pods.run(), name="streamer-pod-watch"),
            ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for handle in self._rechecks.values():
            handle.cancel()
        self._rechecks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _list_jobs(self, **kw: Any) -> Any:
        batch: Any = client.BatchV1Api(await self.api())
        return await batch.list_namespaced_job(self.namespace, **kw)

    async def _list_pods(self, **kw: Any) -> Any:
        core: Any = client.CoreV1Api(await self.api())
        return await core.list_namespaced_pod(self.namespace, **kw)

    def _forget(self, obj: Mapping[str, Any]) -> None:
        uid = str((obj.get("metadata") or {}).get("uid"))
        self.handled.discard(uid)
        handle = self._rechecks.pop(uid, None)
        if handle is not None:
            handle.cancel()

    async def _job(self, job: Mapping[str, Any]) -> None:
        meta = job.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        stream_id = (meta.get("labels") or {}).get(STREAM_LABEL)
        if not stream_id or uid in self.handled or streamer_job_outcome(job) is None:
            return
        pods = await self._job_pods(uid)
        end = streamer_job_outcome(job, pods)
        assert end is not None
        changed = await self.on_end(str(stream_id), end)
        self.handled.add(uid)
        if changed:
            self.ended[end.status] += 1
            log.warning(
                "streamer Job ended without a report",
                extra={"stream_id": stream_id, "job": meta.get("name"), "reason": end.reason},
            )

    async def _pod(self, pod: Mapping[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        stream_id = (meta.get("labels") or {}).get(STREAM_LABEL)
        if not stream_id or uid in self.handled or meta.get("deletionTimestamp"):
            return
        now = datetime.now(UTC)
        end, left = streamer_pod_stuck(pod, now, self.start_timeout_seconds)
        if left is not None:  # look again when its time is up (no event may come then)
            old = self._rechecks.pop(uid, None)
            if old is not None:
                old.cancel()
            self._rechecks[uid] = asyncio.get_running_loop().call_later(
                left + 0.1, self._recheck, uid, str(meta.get("name"))
            )
        if end is None:
            return
        self._rechecks.pop(uid, None)
        changed = await self.on_end(str(stream_id), end)
        self.handled.add(uid)
        if changed:
            self.ended[end.status] += 1
        job = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name")
        if changed and job:
            log.warning(
                "streamer pod is stuck; suspending its Job",
                extra={"stream_id": stream_id, "job": job, "reason": end.reason},
            )
            await self._suspend(str(job))

    def _recheck(self, uid: str, name: str) -> None:
        self._rechecks.pop(uid, None)
        task = asyncio.create_task(self._read_again(name))
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _read_again(self, name: str) -> None:
        try:
            found = await _json(
                await self._list_pods(
                    field_selector=f"metadata.name={name}",
                    label_selector=STREAMER_SELECTOR,
                    _preload_content=False,
                )
            )
            for pod in found.get("items") or []:
                await self._pod(pod)
        except Exception:
            log.exception("re-reading a waiting streamer pod failed")

    async def _suspend(self, job: str) -> None:
        batch: Any = client.BatchV1Api(await self.api())
        try:
            await batch.patch_namespaced_job(
                job,
                self.namespace,
                {"spec": {"suspend": True}},
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            log.info("cannot suspend a stuck streamer Job", extra={"status": exc.status})

    async def _job_pods(self, job_uid: str) -> list[dict[str, Any]]:
        """The Job's pods (for their termination messages); none when they cannot be read."""
        try:
            found = await _json(
                await self._list_pods(
                    label_selector=f"batch.kubernetes.io/controller-uid={job_uid}",
                    _preload_content=False,
                )
            )
        except ApiException as exc:
            log.info("cannot read a streamer Job's pods", extra={"status": exc.status})
            return []
        pods: list[dict[str, Any]] = found.get("items") or []
        return pods


class StreamerWatchCollector:
    """``konfer_api_streamer_watch_*``: a watcher's own counters, read at scrape time.

    Registered on the api's registry by ``app.attach_sfu`` (kubernetes runtime only), so a
    watcher that keeps re-listing (410s, API-server errors) or ends streams shows up on the
    dashboards beside the streams themselves.
    """

    def __init__(self, watcher: StreamerJobWatcher) -> None:
        self.watcher = watcher

    def collect(self) -> Iterator[CounterMetricFamily]:
        w = self.watcher
        families = {
            "lists": "Full lists of streamer Jobs or pods (the first, then after 410 or errors)",
            "watches": "Watches of streamer Jobs or pods opened (each resumes the last)",
            "expired": "Watches answered 410 Gone (resumed from a new list)",
        }
        for field, text in families.items():
            family = CounterMetricFamily(
                f"konfer_api_streamer_watch_{field}", text, labels=["resource"]
            )
            for watched in (w.jobs, w.pods):
                family.add_metric([watched.name.lower()], getattr(watched, field))
            yield family
        ended = CounterMetricFamily(
            "konfer_api_streamer_watch_streams_ended",
            "Streams this replica ended because their streamer Job or pod ended unreported",
            labels=["status"],
        )
        for status in ("failed", "stopped"):
            ended.add_metric([status], w.ended[status])
        yield ended


async def _json(response: Any) -> dict[str, Any]:
    """The body of a ``_preload_content=False`` answer, raising on an error status."""
    try:
        body = await response.read()
        if response.status >= 300:
            raise ApiException(status=response.status, reason=body.decode(errors="replace"))
    finally:
        response.release()
    found: dict[str, Any] = json.loads(body)
    return found
