"""Pipeline events: builds, deployments, verifications, scans and SBOMs, recorded once each.

An ``event_id`` makes a resend harmless. A deployment or verification of the
promotion that holds its environment moves that promotion (a failure in
production queues the rollback request in the same transaction); a passed
verification starts gate 1 into an ``approval: automatic`` environment.
After the first environment, a report no promobot promotion explains is
out-of-band (``bot.engine.out_of_band``): flagged, never evidence.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from bot.engine import messages
from bot.engine.context import EngineContext
from bot.engine.errors import Conflict
from bot.engine.holds import hold_replaced
from bot.engine.incident import tracked
from bot.engine.notifications import Notifications
from bot.engine.out_of_band import NotLinked, OutOfBand, run_conflict, verified_deployment, why_not_linked
from bot.engine.requests import Requests
from bot.engine.rollback import Rollbacks, queue
from bot.engine.states import after_deployment, after_verification
from bot.engine.transitions import lock_row, move, release_slot
from bot.offload import off_loop
from checks.reports import parse_sbom, parse_scan, vex_waived
from storage import audit
from storage.db import transaction
from storage.models import (
    Artifact,
    Deployment,
    PipelineEvent,
    Promotion,
    SbomReport,
    ScanReport,
    Verification,
)
from storage.statuses import PromotionKind
from storage.statuses import PromotionStatus as S

PASSING_CHECK = ("passed", "pass", "ok", "success", "true")


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _run_recorded(s: Session, service: str, environment: str, tag: str, run_id: str | None) -> bool:
    """Whether this run's outcome is already recorded for its promotion (reported twice)."""
    if run_id is None:
        return False
    return (
        s.exec(
            select(col(Deployment.id)).where(
                col(Deployment.service) == service,
                col(Deployment.environment) == environment,
                col(Deployment.tag) == tag,
                col(Deployment.run_id) == run_id,
                col(Deployment.promotion_id).is_not(None),
            )
        ).first()
        is not None
    )


class PipelineEvents:
    def __init__(self, ctx: EngineContext, notifications: Notifications, requests: Requests, rollbacks: Rollbacks):
        self.ctx = ctx
        self.notifications = notifications
        self.requests = requests
        self.rollbacks = rollbacks
        self.out_of_band = OutOfBand(ctx, notifications)

    def _seen(self, s: Session, event_id: str | None, type_: str, body: dict) -> bool:
        """True when this event_id was processed before; raises Conflict if reused for other content."""
        if not event_id:
            return False
        # the body as the pipeline sent it when the handler kept its hash (a resent "now" is the same event)
        digest = (
            body.get("body_sha256")
            or hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
        )
        seen = s.get(PipelineEvent, event_id)
        if seen is not None:
            if seen.body_sha256 != digest:
                raise Conflict(f"event_id {event_id!r} was already used for a different {seen.type} event")
            return True
        s.add(PipelineEvent(event_id=event_id, type=type_, body_sha256=digest, received_at=self.ctx.clock()))
        s.flush()
        return False

    async def artifact_built(self, event: dict, *, actor: str = "pipeline") -> str:
        service, tag, digest = event["service"], event["tag"], event["digest"]
        svc = self.ctx.service_config(service)
        now = self.ctx.clock()
        recorded = await asyncio.to_thread(self._record_build, event, actor, now)
        if isinstance(recorded, str):
            return recorded
        mutation = recorded  # the tag was built before, as another image
        await self.notifications.alert(
            svc.channel,
            messages.tag_mutation(service, tag, mutation.digest, f"{mutation.recorded_at:%Y-%m-%d %H:%M} UTC", digest),
        )
        raise Conflict(
            f"tag {tag!r} of {service} is recorded with digest {mutation.digest}; refusing {digest} (tag mutation)"
        )

    def _record_build(self, event: dict, actor: str, now: datetime) -> str | Artifact:
        """The build recorded (recorded | duplicate | unchanged); or, when the tag was built before as
        another image, that artifact (the attempt audited as a tag mutation)."""
        service, tag, digest = event["service"], event["tag"], event["digest"]
        mutation: Artifact | None = None
        with transaction(self.ctx.db) as s:
            if self._seen(s, event.get("event_id"), "artifact.built", event):
                return "duplicate"
            existing = s.exec(
                select(Artifact).where(col(Artifact.service) == service, col(Artifact.tag) == tag)
            ).first()
            if existing is not None and existing.digest != digest:
                mutation = existing
            elif existing is not None:
                return "unchanged"
            else:
                s.add(
                    Artifact(
                        service=service,
                        tag=tag,
                        digest=digest,
                        commit_sha=event.get("commit_sha"),
                        pipeline_run_id=event.get("pipeline_run_id"),
                        built_at=event.get("built_at"),
                        recorded_at=now,
                    )
                )
                audit.append(
                    s,
                    at=now,
                    actor=actor,
                    action="artifact.built",
                    service=service,
                    detail={k: event.get(k) for k in ("tag", "digest", "commit_sha", "pipeline_run_id", "built_at")},
                )
        if mutation is None:
            return "recorded"
        with transaction(self.ctx.db) as s:
            audit.append(
                s,
                at=now,
                actor=actor,
                action="artifact.tag_mutation",
                service=service,
                detail={"tag": tag, "recorded_digest": mutation.digest, "reported_digest": digest},
            )
        return mutation

    async def deployment_finished(self, event: dict, *, actor: str = "pipeline") -> str:
        service, environment = event["service"], event["environment"]
        self.ctx.service_config(service)
        self.ctx.environment_config(environment)
        await off_loop(self._check_digest, event)
        await self.out_of_band.check_claims("deployment", event, actor=actor)
        try:
            return await self._deployment_finished(event, actor)
        except NotLinked as exc:
            return await self.out_of_band.report("deployment", event, actor=actor, reason=str(exc))

    async def _deployment_finished(self, event: dict, actor: str) -> str:
        return await self._follow(await asyncio.to_thread(self._record_deployment, event, actor))

    async def _follow(self, recorded: tuple[str | None, Promotion | None, str | None, bool]) -> str:
        """Tell the promotion's thread and start its rollback, as a report's record says (``_record_*``)."""
        outcome, p, note, roll_back = recorded
        if outcome is not None:
            return outcome
        if note and p is not None:
            await self.notifications.announce(p.id, note)
        if roll_back and p is not None:
            await self.rollbacks.after_failure(p.id)
        return "recorded"

    def _record_deployment(self, event: dict, actor: str) -> tuple[str | None, Promotion | None, str | None, bool]:
        """(duplicate, or None once recorded; the promotion it moved; what to say in its thread; whether a
        rollback was queued). Raises NotLinked, its transaction undone, for a deployment that is no
        promotion's where promobot does not take reports of its own."""
        service, tag, environment = event["service"], event["tag"], event["environment"]
        now = self.ctx.clock()
        note, roll_back = None, False
        run_id = _str(event.get("run_id"))
        with transaction(self.ctx.db) as s:
            if self._seen(s, event.get("event_id"), "deployment.finished", event):
                return "duplicate", None, None, False
            p = tracked(s, service, environment, tag, (S.DISPATCHED,))
            unlinked = run_conflict(s, p, event) if p is not None else None
            # lock the promotion first: a webhook, a poll and the pipeline may report the same run at once
            if p is not None and (unlinked or not lock_row(s, p.id, S.DISPATCHED)):
                p = None
            if p is None and _run_recorded(s, service, environment, tag, run_id):
                return "duplicate", None, None, False
            if p is None and not self.out_of_band.is_entry_point(environment):
                raise NotLinked(unlinked or why_not_linked(s, service, environment, tag))  # undoes this transaction
            s.add(
                Deployment(
                    service=service,
                    tag=tag,
                    environment=environment,
                    status=event["status"],
                    run_id=run_id,
                    url=event.get("url"),
                    promotion_id=p.id if p else None,
                    finished_at=event.get("finished_at") or now,
                    recorded_at=now,
                )
            )
            detail = {"tag": tag, "status": event["status"], "run_id": run_id, "url": event.get("url")}
            moved = False
            if p is not None:
                target = after_deployment(event["status"])
                values: dict[str, Any] = {
                    "pipeline_run_id": p.pipeline_run_id or run_id,
                    "run_url": p.run_url or event.get("url"),
                }
                if target is S.FAILED:
                    values.update(completed_at=now, reason="deployment failed")
                moved = move(
                    s,
                    p,
                    S.DISPATCHED,
                    target,
                    at=now,
                    actor=actor,
                    action="deployment.finished",
                    detail=detail,
                    **values,
                )
                if moved:
                    if target is S.FAILED:
                        release_slot(s, p)
                        roll_back = queue(s, self.ctx.config, p, now) or p.kind == PromotionKind.ROLLBACK.value
                    note = messages.deployment_note(target is S.DEPLOYED, event.get("url"))
            if not moved:
                audit.append(
                    s,
                    at=now,
                    actor=actor,
                    action="deployment.finished",
                    promotion_id=p.id if p else None,
                    service=service,
                    environment=environment,
                    detail=detail,
                )
        return None, p, note, roll_back

    async def verification_finished(self, event: dict, *, actor: str = "pipeline", follow_up: bool = True) -> str:
        """Record a verification; ``follow_up`` lets a pass start gate 1 (off when importing history)."""
        service, tag, environment = event["service"], event["tag"], event["environment"]
        self.ctx.service_config(service)
        self.ctx.environment_config(environment)
        await off_loop(self._check_digest, event)
        await self.out_of_band.check_claims("verification", event, actor=actor)
        try:
            result = await self._verification_finished(event, actor)
        except NotLinked as exc:
            return await self.out_of_band.report("verification", event, actor=actor, reason=str(exc))
        if result == "recorded" and event["result"] == "passed" and follow_up:
            await self.requests.promote_automatically(service, tag, environment)
        return result

    async def _verification_finished(self, event: dict, actor: str) -> str:
        return await self._follow(await asyncio.to_thread(self._record_verification, event, actor))

    def _record_verification(self, event: dict, actor: str) -> tuple[str | None, Promotion | None, str | None, bool]:
        """As ``_record_deployment``, for a verification."""
        service, tag, environment = event["service"], event["tag"], event["environment"]
        now = self.ctx.clock()
        note, roll_back = None, False
        checks = event.get("checks") or {}
        with transaction(self.ctx.db) as s:
            if self._seen(s, event.get("event_id"), "verification.finished", event):
                return "duplicate", None, None, False
            p = tracked(s, service, environment, tag, (S.DEPLOYED, S.DISPATCHED))
            unlinked = run_conflict(s, p, event) if p is not None else None
            if p is not None and (unlinked or not lock_row(s, p.id, S(p.status))):
                p = None  # moved by a concurrent report; locking it first also keeps the lock order
            # a verification of the deployment a promotion made, after that promotion ended, is still its own
            verifies = p.id if p else verified_deployment(s, service, environment, tag)
            if verifies is not None and event.get("promotion_id") not in (None, verifies):
                verifies = None
            if verifies is None and not self.out_of_band.is_entry_point(environment):
                raise NotLinked(unlinked or why_not_linked(s, service, environment, tag))  # undoes this transaction
            s.add(
                Verification(
                    service=service,
                    tag=tag,
                    environment=environment,
                    result=event["result"],
                    checks=checks,
                    url=event.get("url"),
                    promotion_id=verifies,
                    finished_at=event.get("finished_at") or now,
                    recorded_at=now,
                )
            )
            detail = {"tag": tag, "result": event["result"], "checks": checks, "url": event.get("url")}
            moved = False
            if p is not None:
                target = after_verification(event["result"])
                # the tracker's deadline passes its own reason ("no verification within 1h")
                reason = None if target is S.VERIFIED else (event.get("reason") or "verification failed")
                # a verified rollback keeps why it was asked for
                moved = move(
                    s,
                    p,
                    S(p.status),
                    target,
                    at=now,
                    actor=actor,
                    action="verification.finished",
                    detail=detail,
                    completed_at=now,
                    reason=reason or p.reason,
                )
                if moved:
                    release_slot(s, p)
                    held = hold_replaced(s, p, now) if target is S.VERIFIED else False
                    if target is S.FAILED:
                        roll_back = queue(s, self.ctx.config, p, now) or p.kind == PromotionKind.ROLLBACK.value
                    failed = [k for k, v in checks.items() if str(v).lower() not in PASSING_CHECK]
                    note = messages.verification_note(environment, target is S.VERIFIED, failed, event.get("url"))
                    if held and p.replaces_tag:
                        note += " " + messages.now_on_hold(p.service, p.replaces_tag)
            if not moved:
                audit.append(
                    s,
                    at=now,
                    actor=actor,
                    action="verification.finished",
                    promotion_id=verifies,
                    service=service,
                    environment=environment,
                    detail=detail,
                )
        return None, p, note, roll_back

    def _check_digest(self, event: dict) -> None:
        """A report naming a digest is about that image: refused when the tag was built as another."""
        artifact = self.ctx.ledger.artifact(event["service"], event["tag"])
        if event.get("digest") and artifact is not None and event["digest"] != artifact.digest:
            raise Conflict(
                f"{event['type']} for {event['service']} {event['tag']} names digest {event['digest']}, but the "
                f"artifact was built as {artifact.digest}: this report is about another image"
            )

    async def scan_finished(self, event: dict, *, actor: str = "pipeline") -> str:
        """Record a vulnerability scan, normalised to findings, for the artifact's digest (read and written
        off the event loop: a scan report can be megabytes)."""
        return await asyncio.to_thread(self._record_scan, event, actor)

    def _record_scan(self, event: dict, actor: str) -> str:
        findings = parse_scan(event["scanner"], event["report"])
        counts: dict[str, int] = {}
        waived = 0
        for f in findings:
            if vex_waived(f):  # a VEX said the product is not affected: kept, but no finding
                waived += 1
            else:
                counts[f["severity"]] = counts.get(f["severity"], 0) + 1
        summary: dict[str, Any] = {
            "scanner": event["scanner"],
            "findings": len(findings) - waived,
            "by_severity": counts,
        }
        if waived:
            summary["waived_by_vex"] = waived
        return self._record_report(
            event,
            actor,
            "scan.finished",
            ScanReport,
            summary,
            scanner=event["scanner"],
            findings=findings,
        )

    async def sbom_published(self, event: dict, *, actor: str = "pipeline") -> str:
        """Record an SBOM, normalised to components and licenses, for the artifact's digest (off the event
        loop, as a scan)."""
        return await asyncio.to_thread(self._record_sbom, event, actor)

    def _record_sbom(self, event: dict, actor: str) -> str:
        components = parse_sbom(event["format"], event["sbom"])
        return self._record_report(
            event,
            actor,
            "sbom.published",
            SbomReport,
            {"format": event["format"], "components": len(components)},
            format=event["format"],
            components=components,
        )

    def _record_report(
        self, event: dict, actor: str, type_: str, table: type, summary: dict[str, Any], **values: Any
    ) -> str:
        service, tag = event["service"], event["tag"]
        self.ctx.service_config(service)
        artifact = self.ctx.ledger.artifact(service, tag)
        digest = event.get("digest") or (artifact.digest if artifact else None)
        if artifact is not None and event.get("digest") and event["digest"] != artifact.digest:
            raise Conflict(
                f"{type_} for {service} {tag} names digest {event['digest']}, but the artifact was "
                f"built as {artifact.digest}: this report is about another image"
            )
        now = self.ctx.clock()
        with transaction(self.ctx.db) as s:
            if self._seen(s, event.get("event_id"), type_, event):
                return "duplicate"
            s.add(table(service=service, tag=tag, digest=digest, received_at=now, **values))
            audit.append(
                s, at=now, actor=actor, action=type_, service=service, detail={"tag": tag, "digest": digest, **summary}
            )
        return "recorded"
