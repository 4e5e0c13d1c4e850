"""Is a throttle about the rate? One budget's judge, in one process. Pure.

A throttle caused by the rate becomes rarer when the rate falls; one that is not (the
service refusing a share of requests whatever the pace, as a busy gateway may) does
not. Cutting for the second kind only costs speed: a rule that cuts 10% per throttle
and grows 2% a second settles where throttles arrive about once a second, whatever
caused them (issue 13 measured 30.7 rows/s falling to 4 under 5% random throttles).
So the judge keeps an estimate of the **background**: the share of throttles that is
not about the rate. Only a share clearly above it cuts (judged over ``LOW_MIN``
answers since the last change, once answers have come for ``HISTORY_S``), and each
such cut is an experiment, a **trial**, which lasts while the rate stays near the cut
(until it has grown ``TRIAL_GROWTH`` past it, at most ``TRIAL_S``):

- If ``FLAT * NOISE_SAMPLE`` throttles of requests sent after the cut come before the
  count of answers at which the old share predicted ``NOISE_SAMPLE`` (they are at
  least half as frequent as before), and their share is one a background can have
  (at most ``NOISE_MAX``), the cut did not help: it is **undone**, and their share is
  the background it **showed**.
- A share above ``NOISE_MAX`` after the cut means the cut was too small (early in a
  run the allowance the service saved up flatters the rate accepted): cut again.
- If the answers reach that count first, the cut held: it is **confirmed**, and the
  store keeps what the service accepted as the learned limit.
- If the trial ends before either count (at low rates it sees a few dozen answers),
  it is judged on the shares themselves: throttles after the cut at least half as
  frequent as before undo it; fewer confirm it.

The throttles that came after a cut ended either way (from ``BELOW_AFTER_S`` on: just
after a cut the service may still be refusing what the old rate overdrew) count
toward the background at half weight: the cut may have been a little short of the
limit, and its throttles would pass for background. That share, fading with a
half-life of ``NOISE_HALF_LIFE_S``, is believed once ``BELOW_MIN`` answers are in:
that is how a real limit with random throttles on top is found without cutting for
each of them.

A throttle that cuts nothing while an undone cut has shown a background, and no
trial is weighing it, is **absorbed**: the sender retries it at the pace, with no
backoff. It says nothing about the rate, and a backoff only idles a worker (at zero
latency, a quarter of a second for one row in twenty halved a run).

Some shares are never background, and cut at once: three quarters of the first
answers after a change (two of two, three of four: a cut that left most requests
throttled was far too small, so a run that opened far too fast halves until it
holds) and half of the last ~32 (``HIGH``) cut with no trial; with the pace half
again what the service accepts, twice ``NOISE_MAX`` over a dozen answers cuts
without waiting for ``LOW_MIN``. Throttles of requests sent before the last
change are echoes of a rate already corrected and count for nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

HIGH = 0.5  # a recent share of throttles this high is never background...
HIGH_MIN = 8  # ...once this many answers came since the last change
RECENT = 1 / 32  # the weight of each answer in the recent share
STILL_HIGH = 0.75  # of the first answers after a change, this many throttled...
STILL_HIGH_MIN = 2  # ...of at least this many, up to STILL_HIGH_UNTIL: too fast still
STILL_HIGH_UNTIL = 16
LOW_MIN = 32  # a lower share is judged over at least this many answers
HISTORY_S = 1.0  # ...once answers have come for this long (a whole second)
NOISE_SAMPLE = 24  # a trial expects this many throttles if the share stays flat
FLAT = 0.5  # throttles at least this part as frequent after a cut: not the rate
TRIAL_GROWTH = 0.05  # a trial ends when the rate has grown this much past the cut
TRIAL_S = 20.0  # ...or after this long
NOISE_MAX = 0.15  # never take more than this share for background
NOISE_FLOOR = 0.005  # below this share there is no background to speak of
NOISE_HALF_LIFE_S = 60.0  # what is known of the background fades
BELOW_AFTER_S = 1.0  # a confirmed cut's throttles count as background from then on
BELOW_MIN = 48  # ...once there are this many answers to judge their share by
BELOW_WEIGHT = 0.5  # ...and at half their share (see ``background``)
WINDOW = 256  # past this many answers the counters halve: the share stays recent

Verdict = Literal["cut", "undo", "confirm", "confirm+cut"] | None


@dataclass(slots=True)
class Trial:
    """A cut awaiting its verdict."""

    rate_before: float | None  # what an undo goes back to (None: unlimited)
    share_before: float  # the share of throttles that made the cut
    until: float  # judged by then at the latest
    rate_cut: float = math.inf  # the rate the cut set
    answered: int = 0  # answers of requests sent since the cut
    throttled: int = 0  # of them, throttled
    # the same from BELOW_AFTER_S after the cut: background, if the cut holds
    later_answered: int = 0
    later_throttled: int = 0
    later_from: float = 0.0


@dataclass(slots=True)
class ThrottleJudge:
    answered: float = 0.0  # answers of requests sent since the last change
    throttled: float = 0.0  # of them, throttled on this budget
    recent: float = 0.0  # moving share of throttles among the last answers
    changed_at: float = -1e18  # when this process saw the rate change
    first_at: float | None = None  # the first answer this budget ever had
    noise: float = 0.0  # the share of throttles a cut that did not help showed
    noise_at: float = 0.0
    # answers (and throttles) after cuts that ended, fading
    below_answered: float = 0.0
    below_throttled: float = 0.0
    below_at: float = 0.0
    trial: Trial | None = None
    #: the share a pending cut was asked for with (see ``cut_made``)
    asked_share: float = 0.0
    #: the rate a pending undo goes back to
    undo_to: float | None = None
    #: the last throttle was of the background: retry it without backing off
    absorbed: bool = False
    # the first answers since the last change, and how many were throttled
    fresh_answered: int = 0
    fresh_throttled: int = 0

    def answer(
        self,
        *,
        throttled: bool,
        sent_at: float,
        now: float,
        pace: float | None,
        accepted: float = 0.0,
    ) -> Verdict:
        """Count one answer on this budget; what to ask of the store, if anything.
        ``pace`` is the budget's rate now (None: unlimited), ``accepted`` the rate
        the service accepted lately, both as of the last exchange with the store."""
        self.absorbed = False
        if sent_at < self.changed_at:
            return None  # sent before the last change: an echo
        if self.first_at is None:
            self.first_at = now
        if self.fresh_answered < STILL_HIGH_UNTIL:
            self.fresh_answered += 1
            self.fresh_throttled += throttled
            if (
                throttled
                and self.fresh_answered >= STILL_HIGH_MIN
                and self.fresh_throttled >= STILL_HIGH * self.fresh_answered
            ):
                # a cut that left most requests throttled was far too small (a run
                # that opened far too fast): cut again now, as often as needed
                self.trial = None
                self.asked_share = 0.0
                return "cut"
        if now - self.first_at < HISTORY_S:
            # the first second is the HIGH rule's alone: the service may be spending
            # an allowance it saved up, which would dilute every share after it
            self.recent += ((1.0 if throttled else 0.0) - self.recent) * RECENT
            if self.recent >= HIGH and throttled:
                self.asked_share = 0.0
                return "cut"
            return None
        self.answered += 1
        if self.answered > WINDOW:
            self.answered /= 2
            self.throttled /= 2
        trial = self.trial
        if trial is not None:
            trial.answered += 1
            trial.throttled += throttled
            if sent_at >= trial.later_from:
                trial.later_answered += 1
                trial.later_throttled += throttled
        if not throttled:
            self.recent -= self.recent * RECENT
            if trial is None:
                return None
            if trial.answered * trial.share_before >= NOISE_SAMPLE:
                self._confirmed(now)  # as many answers as the old share needed
                return "confirm"
            if self._in_trial(trial, now, pace):
                return None
            return self._ended(now)
        self.throttled += 1
        self.recent += (1 - self.recent) * RECENT
        verdict = self._judge_throttle(now, pace, accepted)
        # a throttle that cuts nothing, with no trial to weigh it and a background
        # shown by an undone cut, is of the background: it says nothing about the
        # rate, so backing off for it only idles a worker (its retry is paced like
        # any request)
        self.absorbed = (
            verdict is None
            and self.trial is None
            and self.shown_background(now) > NOISE_FLOOR
        )
        return verdict

    @staticmethod
    def _in_trial(trial: Trial, now: float, pace: float | None) -> bool:
        """Still judging: the rate is near the cut, and not for too long."""
        return (
            now < trial.until
            and pace is not None
            and pace <= trial.rate_cut * (1 + TRIAL_GROWTH)
        )

    def _judge_throttle(
        self, now: float, pace: float | None, accepted: float
    ) -> Verdict:
        trial = self.trial
        if self.answered >= HIGH_MIN and self.recent >= HIGH:
            self.trial = None  # nothing to judge: this rate is too high, plainly
            self.asked_share = 0.0
            return "cut"
        confirm = False
        if trial is not None:
            if self._in_trial(trial, now, pace):
                if trial.throttled < FLAT * NOISE_SAMPLE:
                    return None
                share = trial.throttled / trial.answered
                if share > NOISE_MAX:
                    # more than any background: the cut was too small; the trial
                    # goes on, lower
                    self.asked_share = trial.share_before
                    return "cut"
                self.undo_to = trial.rate_before
                self.noise, self.noise_at = share, now
                self.trial = None
                return "undo"
            if self._ended(now) == "undo":
                return "undo"
            confirm = True
        if not self._worth_a_cut(now, far_too_fast=self._far_too_fast(pace, accepted)):
            return "confirm" if confirm else None
        # the throttle that triggers the cut is left out of the share it is judged by
        self.asked_share = max(self.throttled - 1, 1) / self.answered
        return "confirm+cut" if confirm else "cut"

    def _ended(self, now: float) -> Verdict:
        """The rate grew back (or time ran out) before either count was reached, as
        at low rates, where a trial sees a few dozen answers: judge by the shares
        themselves. Throttles at least half as frequent after the cut: it did not
        help (undone; too little to call their share background). Otherwise it
        held."""
        trial = self.trial
        assert trial is not None  # noqa: S101 - only called during a trial
        expected = FLAT * trial.share_before * trial.answered
        if trial.throttled >= max(1.0, expected):
            self.undo_to = trial.rate_before
            self._count_later(now)
            return "undo"
        self._confirmed(now)
        return "confirm"

    def _confirmed(self, now: float) -> None:
        """The trial's cut was about the rate: what was throttled after it is
        background."""
        self._count_later(now)

    def _count_later(self, now: float) -> None:
        """End the trial; what was throttled after its cut was taken hold, at a
        rate the service accepts, counts toward the background (at half weight)."""
        trial = self.trial
        self.trial = None
        if trial is None or trial.later_answered == 0:
            return
        fade = math.pow(0.5, max(0.0, now - self.below_at) / NOISE_HALF_LIFE_S)
        self.below_answered = self.below_answered * fade + trial.later_answered
        self.below_throttled = self.below_throttled * fade + trial.later_throttled
        self.below_at = now

    @staticmethod
    def _far_too_fast(pace: float | None, accepted: float) -> bool:
        """Sending half again as fast as the service accepts: what a background
        cannot do (it refuses at most NOISE_MAX), only a limit."""
        return (
            pace is not None and accepted > 0 and pace > accepted * (1 + 3 * NOISE_MAX)
        )

    def _worth_a_cut(self, now: float, *, far_too_fast: bool = False) -> bool:
        """A share of throttles clearly above the background, over enough answers."""
        if self.first_at is None or now - self.first_at < HISTORY_S:
            return False
        if self.answered < LOW_MIN:
            # too few to weigh a low share, unless the pace is plainly over what the
            # service accepts and the share is twice any background's (a run still
            # far too fast after its first cuts)
            return (
                far_too_fast
                and self.answered >= HIGH_MIN
                and self.throttled >= 3
                and self.throttled >= 2 * NOISE_MAX * self.answered
            )
        noise = self.background(now)
        if noise <= NOISE_FLOOR:
            return self.throttled > 0
        # clearly above: by half again and two points, and by three standard
        # deviations of the count the background alone would give (over 32 answers
        # a 5% background throttles 6 now and then)
        expected = self.answered * noise
        spread = 3 * math.sqrt(expected * (1 - noise))
        return self.throttled > max(
            expected * 1.5 + self.answered * 0.02, expected + spread
        )

    def shown_background(self, now: float) -> float:
        """The background a cut that did not help showed (strong evidence)."""
        fade = math.pow(0.5, max(0.0, now - self.noise_at) / NOISE_HALF_LIFE_S)
        return min(self.noise * fade, NOISE_MAX)

    def background(self, now: float) -> float:
        """The share of throttles taken not to be about the rate: what an undone cut
        showed, or half of what came after confirmed ones. Half, because a cut from
        a rate the service's saved-up allowance flattered may still be a little over
        the limit, and its throttles would pass for background."""
        noise = self.shown_background(now)
        if self.below_answered >= BELOW_MIN:
            fade = math.pow(0.5, max(0.0, now - self.below_at) / NOISE_HALF_LIFE_S)
            below = self.below_throttled / self.below_answered
            noise = max(noise, BELOW_WEIGHT * below * fade)
        return min(noise, NOISE_MAX)

    def changed(self, now: float) -> None:
        """The rate changed, by another process or with another verdict than a cut
        of this one: start counting afresh. A trial under way ends without a
        verdict: what it would undo is no longer the rate."""
        self.answered = self.throttled = self.recent = 0.0
        self.fresh_answered = self.fresh_throttled = 0
        self.changed_at = now
        self.trial = None

    def cut_made(
        self, now: float, *, rate_before: float | None, rate_cut: float | None
    ) -> None:
        """This process's cut was applied (it set ``rate_cut``): judge it from now
        on. A cut made during a trial belongs to that trial."""
        trial = self.trial
        if trial is None and self.asked_share > 0:
            trial = Trial(rate_before, self.asked_share, until=now + TRIAL_S)
        self.changed(now)
        if trial is not None:
            trial.rate_cut = rate_cut if rate_cut is not None else math.inf
            trial.answered = trial.throttled = 0
            trial.later_answered = trial.later_throttled = 0
            trial.later_from = now + BELOW_AFTER_S
            self.trial = trial
