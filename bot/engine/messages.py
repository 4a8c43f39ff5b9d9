"""What the engine says to people, in one place: refusals, explanations and the card thread's notes.

Every refusal names the rule, the evidence and the next step. Anything a person
or a pipeline typed is escaped (``esc``) or quoted (``literal``) before it is
shown; only recorded Slack user ids become mentions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.engine.roles import DispatchRequest, RunInfo
from bot.text import approver_mentions, clip, esc, evidence_text, link, literal, mention
from checks.base import GateReport
from storage.models import Promotion
from storage.records import HoldRecord, LockRecord
from storage.statuses import PromotionStatus as S

# --- resolving and requesting ------------------------------------------------------------


def first_environment_needs_tag(service: str, environment: str) -> str:
    return (
        f"`{environment}` is the first environment: name the tag to promote "
        f"(`/promote {service} TAG to {environment}`)."
    )


def nothing_verified(service: str, source: str, target: str) -> str:
    return (
        f"Nothing is verified in {source} for {service}, so there is nothing to promote to {target}. "
        f"Name a tag, or verify one in {source} first."
    )


def no_such_artifact(service: str, tag: str) -> str:
    return (
        f"No artifact `{tag}` is recorded for {service}. Check the tag, or report it from the build with "
        "`promobot report artifact.built`."
    )


def mutable_tag(service: str, tag: str) -> str:
    return (
        f"`{tag}` is a mutable tag: it can point at a different image tomorrow, so it can never be promoted "
        f"(rule: immutable tag). Promote the commit-SHA tag your build pushed: `/promote {service} TAG`."
    )


def expedite_not_configured() -> str:
    return (
        "Expedited promotion is off: promobot.yml has no `policy.expedite` (its approvers and how many must "
        "approve). Ask your platform team to configure it, or promote through every environment."
    )


def expedite_needs_reason(service: str) -> str:
    return (
        "An expedited promotion needs a reason, for the approvers and the audit trail: "
        f"`/promote {service} TAG --expedite CVE-2026-1234 fix`."
    )


def expedite_needs_tag(service: str) -> str:
    return f"An expedited promotion names the patched artifact: `/promote {service} TAG [to ENV] --expedite REASON…`."


def expedite_first_environment(target: str) -> str:
    return f"`{target}` is the first environment: there is nothing to expedite into it; name a later one."


def nothing_waiting(service: str) -> str:
    return (
        f"Nothing is waiting to be promoted for {service}: every verified artifact already runs in the next "
        "environment. Name a tag: `/promote SERVICE TAG [to ENV]`."
    )


def no_known_good(service: str, environment: str, current: str | None) -> str:
    return (
        f"No earlier artifact of {service} was verified in {environment}, so there is nothing known-good to "
        f"roll back to (it runs `{current or 'nothing'}`)."
    )


def never_verified_there(tag: str, environment: str) -> str:
    return (
        f"`{tag}` was never verified in {environment}, so it is not a known-good artifact to roll back to. "
        "Omit the tag to take the last known-good one."
    )


def in_progress(p: Promotion, kind: str = "promotion") -> str:
    if kind == "rollback" and S(p.status) in (S.APPROVED, S.DISPATCHED):
        return (
            f"Promotion `{p.id}` of `{p.tag}` to {p.target_environment} is {S(p.status).label.lower()}: its deploy "
            "is under way, and a rollback now would race it. As soon as it is deployed (its verification "
            f"pending), `/rollback {p.service} in {p.target_environment} reason…` can be requested at once; "
            f"to stop it before dispatch, `/promote lock {p.service} {p.target_environment} reason…`."
        )
    return (
        f"Promotion `{p.id}` of `{p.tag}` to {p.target_environment} is in progress "
        f"({S(p.status).label.lower()}). Wait for it to finish, then ask again."
    )


def rollback_waiting(p: Promotion) -> str:
    return (
        f"Rollback `{p.id}` to `{p.tag}` in {p.target_environment} waits for approval while `{p.preempts}` "
        "awaits its verification; only another rollback may take its place. Decide on its card first."
    )


def requested(p: Promotion) -> str:
    what = "EXPEDITED promotion" if p.expedited else ("rollback" if p.kind == "rollback" else "promotion")
    who = " from the policy.expedite approvers" if p.expedited else ""
    return (
        f"Requested {what} `{p.id}` of {p.service} `{p.tag}` to {p.target_environment}; "
        f"waiting for {p.required_approvals} approval(s){who}."
    )


def preempted_note(rollback: Promotion) -> str:
    return (
        f"Rolled back by `{rollback.id}` (to `{rollback.tag}`) before its verification finished: "
        "no longer waiting for it."
    )


def preempting_rollback_voided(rollback: Promotion) -> str:
    return (
        f":rotating_light: The rollback `{rollback.id}` of {rollback.service} to `{rollback.tag}` in "
        f"{rollback.target_environment} was voided right before dispatch (the gates no longer hold), after its "
        f"approval had ended `{rollback.preempts}`'s wait: {rollback.target_environment} still runs "
        f"`{rollback.replaces_tag or 'the deploy it replaced'}`. Resolve the refusal on its card and request "
        "the rollback again, or act by hand."
    )


def already_in_progress(promotion_id: str, target: str) -> str:
    return f"Promotion `{promotion_id}` to {target} is already in progress. Wait for it to finish, then ask again."


def opened_at_the_same_moment(service: str, target: str) -> str:
    return f"Another promotion of {service} to {target} was opened at the same moment. Run `/status` to see it."


def superseded_by(promotion_id: str, requester: str) -> str:
    return f"Superseded by a newer request `{promotion_id}` from {mention(requester)}."


def blocking_reasons(report: GateReport) -> str:
    """The refusing gates as bullet lines; gate reasons quote lock and hold reasons people typed, so they
    are escaped and only the recorded users are mentioned."""
    return "\n".join(f"• {r.title}: {evidence_text(r.reason, r.evidence)}" for r in report.blocking)


def automatic_not_started(service: str, tag: str, target: str, problem: Exception) -> str:
    return f"Automatic promotion of {service} `{tag}` to {target} not started: {esc(problem)}"


def automatic_refused(service: str, tag: str, target: str, report: GateReport, message: str) -> str:
    reasons = blocking_reasons(report) or esc(message)
    return f"Automatic promotion of {service} `{tag}` to {target} refused:\n{reasons}"


# --- approvals and decisions ------------------------------------------------------------


def no_such_promotion(promotion_id: str) -> str:
    return f"There is no promotion {literal(promotion_id)}."


def nothing_to_revoke(promotion_id: str) -> str:
    return (
        f"There is no promotion `{esc(promotion_id)}`. Expected `/promote revoke PROMOTION_ID` (the id is on "
        "the card's last line)."
    )


def already_decided(p: Promotion, approvers: Sequence[str]) -> str:
    """Why a click changed nothing: the promotion's state, and who decided it."""
    st = S(p.status)
    if st is S.PENDING_APPROVAL:
        return f"`{p.id}` is still waiting for approval."
    if st in (S.APPROVED, S.DISPATCHED, S.DEPLOYED, S.VERIFIED):
        who = " by " + ", ".join(f"<@{u}>" for u in approvers) if approvers else ""
        return f"`{p.id}` was already approved{who} ({st.label.lower()}); nothing changed."
    by = f" by <@{p.decided_by}>" if p.decided_by else ""
    return f"`{p.id}` is {st.label.lower()}{by}; nothing changed."


def own_request(p: Promotion, verb: str) -> str:
    return f"You requested `{p.id}`, so you cannot {verb} it: another approver must. You can cancel it instead."


def not_an_approver(environment: str, approvers: Sequence[str]) -> str:
    return (
        f"You are not an approver for {environment}. Approvers: {approver_mentions(approvers)}. "
        "Ask one of them, or ask your platform team to add you in promobot.yml."
    )


def not_an_expedite_approver(p: Promotion, approvers: Sequence[str]) -> str:
    return (
        f"`{p.id}` is an EXPEDITED promotion: only the policy.expedite approvers count "
        f"({approver_mentions(approvers)}), {p.required_approvals} of them. Ask one of them."
    )


def expired_ask_again(p: Promotion, ttl: str) -> str:
    expires = f"{p.expires_at:%Y-%m-%d %H:%M} UTC" if p.expires_at else "its deadline"
    return f"`{p.id}` expired at {expires} (approvals last {ttl}). Ask the requester to request it again."


def expired_before_complete(p: Promotion) -> str:
    expires = f"{p.expires_at:%Y-%m-%d %H:%M} UTC" if p.expires_at else "its deadline"
    return f"`{p.id}` expired at {expires} before its approval was complete; request it again."


def expired_tell(p: Promotion) -> str:
    return (
        f"Your promotion `{p.id}` of {p.service} `{p.tag}` to {p.target_environment} expired without approval. "
        "Request it again if it is still wanted."
    )


def approved_note(actor: str, report: GateReport) -> str:
    """The thread note when approval completes; says so when the re-check could not verify everything."""
    if report.errored:
        unverified = ", ".join(r.title for r in report.blocking)
        return (
            f"Approved by <@{actor}>. The re-check could not verify {esc(unverified)} yet "
            "(the evidence source did not answer); the dispatch waits and checks again."
        )
    return f"Approved by <@{actor}>. Dispatching the deploy workflow."


def rejected_note(user: str, reason: str) -> str:
    return f"Rejected by <@{user}>: {literal(reason)}"


def rejected_tell(p: Promotion, user: str, reason: str) -> str:
    return (
        f"Your promotion `{p.id}` of {p.service} `{p.tag}` to {p.target_environment} was rejected by "
        f"<@{user}>: {literal(reason)}"
    )


def revoke_refused(p: Promotion) -> str:
    """Why an approval cannot be taken back once the promotion went ahead, and what to do instead."""
    if S(p.status) is S.APPROVED:
        return (
            f"`{p.id}` is already approved and its dispatch is queued: an approval can be revoked only while "
            f"the request waits for approvals. To stop it before dispatch, lock the environment: "
            f"`/promote lock {esc(p.service)} {p.target_environment} reason…` (the gates run again right "
            "before dispatch)."
        )
    when = f" at {p.dispatched_at:%Y-%m-%d %H:%M} UTC" if p.dispatched_at else ""
    return (
        f"`{p.id}` was dispatched{when}: revoking cannot undo a deploy. To undo it: "
        f"`/rollback {esc(p.service)} in {p.target_environment} reason…`."
    )


# --- dispatch -------------------------------------------------------------------------------


def dispatch_failed(attempts: int, error: str, workflow: str, repository: str, ref: str) -> str:
    return (
        f"Dispatch failed after {attempts} attempt(s): {error}. Check that `{workflow}` exists in {repository} "
        f"at `{ref}`, has a workflow_dispatch trigger with the inputs environment, image_tag, image_digest and "
        "promotion_id, and that promobot's token may run it."
    )


def dispatched_anyway(p: Promotion, run_id: str | None, status: S) -> str:
    return (
        f":warning: `{p.id}` was dispatched (run {run_id or 'not yet listed'}) although it is now "
        f"{status.label.lower()}: watch that deploy and roll back if needed."
    )


def dispatched(request: DispatchRequest, run_id: str | None, url: str | None, described_dry_run: str | None) -> str:
    if described_dry_run is not None:
        return "Dry run: no GitHub credentials, so nothing was dispatched. " + described_dry_run
    if url:
        return f"Dispatched `{esc(request.workflow)}`: {link(url, f'run {esc(run_id)}')}"
    return f"Dispatched `{esc(request.workflow)}`; the run will be linked once GitHub lists it."


def not_dispatched_gates() -> str:
    return "Not dispatched: the gates no longer hold (checked right before dispatch)."


def run_not_listed_yet() -> str:
    return "an earlier dispatch may have started a run; looking for it until GitHub has surely listed it"


# which evidence source an errored gate waited for
_SOURCES = {"source_commit_reachable": "GitHub", "digest_matches": "the registry", "metadata_complete": "the registry"}


def unverified(report: GateReport) -> str:
    """What could not be checked, and why: one line for the card and the outbox's record."""
    return "; ".join(f"{r.title}: {r.reason}" for r in report.blocking)


def waiting_source(report: GateReport) -> str:
    sources = sorted({_SOURCES.get(r.gate, "the evidence source") for r in report.blocking})
    return " and ".join(sources)


def waiting_for_evidence(report: GateReport, next_try: datetime, deadline: datetime) -> str:
    return (
        f":hourglass: Waiting for {waiting_source(report)}: {esc(unverified(report))}. Still approved; next try at "
        f"{next_try:%H:%M:%S} UTC, and promobot keeps trying until the approval expires at "
        f"{deadline:%Y-%m-%d %H:%M} UTC."
    )


def evidence_never_answered(report: GateReport, deadline: datetime) -> str:
    return (
        f"Not dispatched: {esc(unverified(report))}, and it could not be checked before the approval expired at "
        f"{deadline:%Y-%m-%d %H:%M} UTC. Request it again once {waiting_source(report)} answers."
    )


def run_linked(run_id: str, url: str | None) -> str:
    return f"Run linked: {link(url, f'run {esc(run_id)}')}"


# --- pipeline events -----------------------------------------------------------------------


def tag_mutation(service: str, tag: str, recorded_digest: str, recorded_at: str, digest: str) -> str:
    return (
        f":rotating_light: Tag mutation refused: {service} `{tag}` was recorded with `{recorded_digest}` at "
        f"{recorded_at} and is now reported with `{digest}`. A tag must name one build forever: find who "
        "re-pushed it, and build a new tag."
    )


def deployment_note(deployed: bool, url: str | None) -> str:
    """Everything from the pipeline is escaped: only a plain http(s) URL becomes a link."""
    return (
        "Deployed; waiting for verification."
        if deployed
        else f"Deployment failed: {link(url, 'the run') if url else 'see the run'}"
    )


def verification_note(environment: str, verified: bool, failed_checks: Sequence[str], url: str | None) -> str:
    if verified:
        return f"Verified in {environment}. :white_check_mark:"
    which = f" ({', '.join(esc(c) for c in failed_checks)})" if failed_checks else ""
    return f"Verification failed in {esc(environment)}{which}" + (f": {link(url, 'the report')}" if url else ".")


# --- locks and holds -----------------------------------------------------------------------


def lock_needs_reason(service: str, environment: str) -> str:
    return (
        "A lock needs a reason, so that people know why and when it may be lifted: "
        f"`/promote lock {esc(service)} {esc(environment)} incident INC-42`. Nothing was locked."
    )


def hold_needs_reason(service: str, tag: str, *, clear: bool) -> str:
    verb, example = ("cleared", "fixed by 9b1e0d4") if clear else ("placed", "crash loop in production")
    return (
        f"A hold is {verb} with a reason, for the audit trail: "
        f"`/promote hold{' clear' if clear else ''} {esc(service)} {esc(tag)} {example}`. Nothing changed."
    )


def unlock_refused(lock: LockRecord, keeper_env: str, keepers: Sequence[str]) -> str:
    who = approver_mentions(keepers) if keepers else "nobody (configure approvers)"
    return (
        f"Lifting the lock on {esc(lock.service)} in {esc(lock.environment)} needs an approver of {esc(keeper_env)}: "
        f"{who}. It was locked by {mention(lock.locked_by)} at {lock.locked_at:%Y-%m-%d %H:%M} UTC: "
        f"{literal(lock.reason)}. Ask one of them; the lock stays."
    )


def clear_hold_refused(hold: HoldRecord, keeper_env: str, keepers: Sequence[str]) -> str:
    by = f" by {mention(hold.held_by)}" if hold.held_by else ""
    return (
        f"Clearing the hold on {esc(hold.service)} `{esc(hold.tag)}` needs an approver of {esc(keeper_env)} "
        f"(a hold keeps the artifact out of every environment, {esc(keeper_env)} included): "
        f"{approver_mentions(keepers)}. It was put on hold{by}: {literal(hold.reason)}. Ask one of them; "
        "the hold stays."
    )


# --- rollback and holds ----------------------------------------------------------------------


def rollback_failed(p: Promotion) -> str:
    run = f" {link(p.run_url, esc(p.pipeline_run_id or 'run'))}" if p.run_url else ""
    return (
        f":rotating_light: The rollback of {p.service} to `{p.tag}` in {p.target_environment} (`{p.id}`) "
        f"failed: {esc(p.reason)}. promobot does not retry a rollback by itself: check the run{run} and act by hand."
    )


def failure_headline(p: Promotion) -> str:
    what = f"{esc(p.reason or 'failed')} for {p.service} `{p.tag}` in {p.target_environment} (`{p.id}`)"
    return f":rotating_light: {what[0].upper()}{what[1:]}."


def rollback_not_requested(headline: str, problem: Exception) -> str:
    return (
        f"{headline} No rollback was requested: {esc(problem)} Production needs a person: fix forward, or "
        "deploy a good artifact by hand."
    )


def rollback_refused(headline: str, p: Promotion, tag: str, report: GateReport, message: str) -> str:
    reasons = blocking_reasons(report) or esc(message)
    return (
        f"{headline} The rollback to the last known-good `{tag}` was refused:\n{reasons}\nWhen that is "
        f"resolved: `/rollback {p.service} {tag} in {p.target_environment}`."
    )


def rollback_requested(headline: str, tag: str, rollback_id: str | None, approvers: Sequence[str]) -> str:
    return (
        f"{headline} promobot requested a rollback to the last known-good `{tag}`: `{rollback_id}`. "
        f"{approver_mentions(approvers, ' ')}: please decide on its card."
    )


def rollback_already_requested(rollback: Promotion) -> str:
    return (
        f"Rollback `{rollback.id}` to `{rollback.tag}` was already requested while this deploy awaited its "
        "verification: decide on its card; no second rollback is requested."
    )


def now_on_hold(service: str, tag: str) -> str:
    return (
        f"`{esc(tag)}` is now on hold: no environment takes it until "
        f"`/promote hold clear {esc(service)} {esc(tag)} reason…`."
    )


def run_link(url: str | None, label: str) -> str:
    return link(url, label)


# --- the deploy side: authorization, the protection rule, out-of-band reports -------------------

DEPLOY_NEXT_STEP = {
    "unknown_promotion": "Deploys go through promobot: `/promote SERVICE TAG to ENV`; promobot dispatches the "
    "deploy workflow itself.",
    "promotion_mismatch": "A promotion id stands for one service, environment and artifact: request a promotion "
    "for this one.",
    "not_dispatched": "Only a promotion promobot approved and dispatched may deploy: wait for its approval and "
    "dispatch, never dispatch the deploy workflow by hand.",
    "run_not_found": "Send this run's own id (GITHUB_RUN_ID) from the deploy workflow.",
    "wrong_workflow": "Only the run promobot dispatched may deploy: find who started this run; to deploy, request "
    "a promotion.",
    "wrong_event": "Only the run promobot dispatched (workflow_dispatch) may deploy: to deploy, request a promotion.",
    "wrong_actor": "Only the run promobot dispatched may deploy: find who started this run; to deploy, request a "
    "promotion.",
    "not_the_dispatched_run": "Only the run promobot dispatched may deploy: to deploy, request a promotion.",
    "another_run": "A promotion deploys once: to deploy again, request a new promotion (or a rollback).",
    "rerun_attempt": "A promotion deploys once and a re-run is not a new approval: request a new promotion (or a "
    "rollback).",
    "unverifiable": "Give promobot GitHub credentials (GITHUB_TOKEN or the GitHub App) so that it can check runs.",
    "unknown_environment": "Enable promobot's protection rule only on environments promobot.yml names.",
    "unknown_service": "Add the repository's service to promobot.yml, or remove promobot's rule from this repository.",
}


def deploy_denied_text(reason: str, evidence: str, p: Promotion | None) -> str:
    """A deploy refusal in plain text (API answers, GitHub comments): the rule, the evidence, the next step."""
    what = f" of {p.id}" if p is not None else ""
    return f"Deploy refused{what} ({reason}): {evidence}. {DEPLOY_NEXT_STEP.get(reason, '')}".strip()


def deploy_authorized_text(p: Promotion, run: RunInfo) -> str:
    return (
        f"Run {run.run_id} (attempt {run.run_attempt or 1}) is promobot's dispatch of {p.id}: {p.service} "
        f"`{p.tag}` ({p.digest}) to {p.target_environment}, approved."
    )


def not_dispatched_evidence(p: Promotion) -> str:
    st = S(p.status)
    if st is S.PENDING_APPROVAL:
        return f"{p.id} is still waiting for approval"
    if st is S.APPROVED:
        return f"{p.id} is approved but promobot has not dispatched it yet"
    return f"{p.id} is {st.label.lower()}: it deploys nothing more"


def deploy_authorized_note(run: RunInfo | None, source: str) -> str:
    how = "GitHub's protection rule" if source == "protection_rule" else "the deploy workflow"
    rid = (run.run_id if run else None) or "?"
    return f"Run {link(run.url if run else None, rid)} asked {how} to deploy: authorized (promobot's own dispatch)."


def deploy_denied_alert(
    service: str,
    environment: str,
    run_id: str,
    run: RunInfo | None,
    reason: str,
    message: str,
    source: str,
) -> str:
    """The channel's and approvers' alert: which run, who started it, which rule refused, and why."""
    who = ""
    if run is not None and run.actor:
        who = f", started by {esc(run.actor)}"
        if run.triggering_actor and run.triggering_actor != run.actor:
            who += f" (this attempt by {esc(run.triggering_actor)})"
    asked = "GitHub's protection rule" if source == "protection_rule" else "its authorize step"
    label = f"run {esc(run_id)}"
    return (
        f":no_entry: A deploy of {esc(service)} to {esc(environment)} was refused before it ran: "
        f"{link(run.url if run else None, label)}{who} asked through {asked}. {esc(message)}"
    )


def protection_rule_comment(state: str, message: str) -> str:
    """The comment GitHub shows on the held deployment (Markdown, at most 1024 characters)."""
    return clip(f"promobot {state} this deployment. {message}", 1024)


def protection_rule_unanswered(repository: str, run_id: str, environment: str, state: str, exc: Exception) -> str:
    hint = (
        " Only a GitHub App can answer its protection rule: give promobot GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY "
        "and GITHUB_APP_INSTALLATION_ID (Deployments: read and write)."
        if "403" in str(exc)
        else " promobot tries again on each tracking pass; GitHub holds the job for up to 30 days."
    )
    return (
        f":warning: promobot decided `{state}` for run {esc(run_id)} of {esc(repository)} in "
        f"{esc(environment)}, but GitHub did not take the answer: {esc(exc)}.{hint}"
    )


def out_of_band_alert(
    kind: str,
    service: str,
    tag: str,
    environment: str,
    outcome: str,
    actor: str,
    reason: str,
    accepted: bool,
    event: dict,
) -> str:
    """What the channel and the approvers read about a report no promobot promotion explains."""
    run = f", run {esc(event['run_id'])}" if event.get("run_id") else ""
    where = f" ({link(event.get('url'), 'link')})" if event.get("url") else ""
    answer = (
        f"{esc(environment)} takes out-of-band reports (policy.out_of_band_environments), so it was recorded as one."
        if accepted
        else f"{esc(environment)} refuses out-of-band reports: the report got a 409."
    )
    return (
        f":warning: Out-of-band {kind} in {esc(environment)}: {esc(service)} `{esc(tag)}` ({esc(outcome)}), "
        f"reported by {esc(actor)}{run}{where}: {esc(reason)}. {answer} It never counts as evidence: not as "
        "deployed or verified here, not for soak, not as known good. Find who deployed it; to bring an artifact "
        f"here, promote it: `/promote {esc(service)} TAG to {esc(environment)}`."
    )


def out_of_band_refusal(kind: str, environment: str, reason: str) -> str:
    return (
        f"Out-of-band {kind} refused: {environment} takes only the deployments and verifications of the promotion "
        f"promobot dispatched there, and {reason}. It is recorded as out-of-band (flagged, never evidence) and the "
        f"approvers were alerted. Deploy through promobot (/promote), or list {environment} in "
        "policy.out_of_band_environments to take such reports without a 409."
    )


def promotion_mismatch_refusal(kind: str, problem: str) -> str:
    return (
        f"Promotion mismatch: this {kind} report names a promotion that is not its own: {problem}. A promotion id "
        "stands for one service, environment and artifact; nothing was recorded."
    )


def promotion_mismatch_alert(kind: str, service: str, environment: str, tag: str, actor: str, problem: str) -> str:
    return (
        f":no_entry: A {kind} report for {esc(service)} `{esc(tag)}` in {esc(environment)} from {esc(actor)} named "
        f"a promotion that is not its own and was refused: {esc(problem)}."
    )
