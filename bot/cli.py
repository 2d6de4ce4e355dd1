"""The `mentiondesk` command. Signals and exit codes live here and nowhere below."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mentiondesk.bot.config import Config, ConfigError, find_config, load_config
from mentiondesk.bot.reports.cli import add_arguments as add_report_arguments

if TYPE_CHECKING:
    from mentiondesk.bot.daemon import Daemon
    from mentiondesk.bot.systemd import Notifier

logger = logging.getLogger("mentiondesk")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
# systemd: how long `run` waits for the first catch-up before it reports READY anyway (the unit's TimeoutStartSec
# leaves room for the start and this); how often it looks at the state (cheap counts), and how often it sends the
# STATUS= line when nothing changed.
READY_WAIT_S = 60.0
STATUS_CHECK_S = 5.0
STATUS_REFRESH_S = 30.0


# The commands that read a config file; `--config` may come before or after them.
CONFIG_COMMANDS = ("run", "check", "classify", "db", "report", "forget", "classifier")


def _add_config_arg(parser: argparse.ArgumentParser, dest: str = "config") -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        dest=dest,
        metavar="FILE",
        help="TOML config file (default: $MENTIONDESK_CONFIG, ./config.toml, /etc/mentiondesk/config.toml)",
    )


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    # Written so that nan fails too; the config's classifier.threshold takes the same range.
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mentiondesk", description="Turn Mastodon mentions into Slack tickets.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('mentiondesk')}")
    # Its own dest: a subcommand's --config default would otherwise overwrite the value given before it.
    _add_config_arg(parser, dest="config_before_command")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon", description="Run the daemon until SIGTERM or Ctrl-C.")
    _add_config_arg(run)

    check = sub.add_parser(
        "check",
        help="validate the config and test every connection",
        description="Validate the config file, then check Mastodon (verify_credentials), "
        "Slack (auth.test) and the database (reachable, migrations current).",
    )
    _add_config_arg(check)

    classify = sub.add_parser(
        "classify",
        help="classify JSON lines from stdin",
        description='Read JSON lines {"text": ...} on stdin; write one JSON line per input, in order: '
        '{"label": "complaint"|"other", "score": 0..1, "kind": "complaint"|"question"|"other", '
        '"band": "ticket"|"triage"|"stored", "priority": "urgent"|"high"|"normal"|"low", "priority_reasons": '
        '[...], "categories": [...]}, decided by the same rules as the daemon. Optional input fields feed the '
        'priority cues: "language", "followers_count", "reblogs_count", "favourites_count". A line that cannot be '
        'scored (blank, invalid JSON, not an object, "text" missing or not a string, a count that is not a whole '
        'number of 0 or more) gets {"error": "line N: ..."} in its place. An input line\'s "id" field, if any, is '
        "echoed at the front of its output line (error lines too), so callers can join results. Without --config: "
        "the packaged model and the default rules (no config file is looked for).",
        epilog="exit status: 0 when every line was scored, 1 when any line was an error line "
        "(or the model cannot be loaded), 2 for bad arguments or a config file that cannot be used.",
    )
    _add_config_arg(classify)
    classify.add_argument(
        "--threshold",
        type=_unit_interval,
        default=None,
        help="complaint threshold, 0 to 1 (default: the config's, else the model's)",
    )
    classify.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="default, embeddings (needs the ml extra) or a model path; default: the config's classifier.model, "
        "else the packaged default model",
    )

    classifier = sub.add_parser(
        "classifier", help="measure the complaint model", description="Measure the complaint model."
    )
    classifier_sub = classifier.add_subparsers(dest="classifier_command", required=True, metavar="CLASSIFIER_COMMAND")
    evaluate = classifier_sub.add_parser(
        "eval",
        help="the model's figures on a labelled CSV",
        description="Score every post of a labelled CSV (columns text and complaint, 0 or 1; domain optional) "
        "and print macro-F1, macro precision and recall, and the complaint class's F1; with a domain column, "
        "also for the brand posts alone (without random_tweet and random_reply).",
        epilog="exit status: 0 with the figures, 1 when the model cannot be loaded, 2 for a file that cannot "
        "be used (the message names the line or column).",
    )
    evaluate.add_argument("--data", type=Path, required=True, metavar="CSV", help="the labelled posts")
    evaluate.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="default, embeddings (needs the ml extra) or a model path (.npz, or an embeddings directory or .onnx); "
        "default: classifier.model's default, the packaged default model",
    )
    evaluate.add_argument(
        "--threshold", type=_unit_interval, default=None, help="complaint threshold, 0 to 1 (default: the model's)"
    )
    evaluate.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    retrain = classifier_sub.add_parser(
        "train",
        help="retrain on the base data plus the team's labels",
        description="Retrain the complaint model on the base training data plus the posts agents labelled, print "
        "the before/after figures, write complaint-model-v<N>.{npz,json} to classifier.models_dir and install it "
        "as current.{npz,json} unless a figure dropped. Needs the train extra: pip install 'mentiondesk[train]'.",
        epilog="exit status: 0 when the new model was installed, 1 when it scored worse and was not (or "
        "training failed), 2 for bad arguments, config or data, or without the train extra.",
    )
    _add_config_arg(retrain)
    retrain.add_argument(
        "--data", type=Path, default=None, metavar="CSV", help="the base training data (default: the shipped file)"
    )
    retrain.add_argument("--force", action="store_true", help="install the new model even when it scores worse")
    retrain.add_argument("--folds", type=int, default=10, help="cross-validation folds (default: %(default)s)")

    db = sub.add_parser("db", help="database schema commands", description="Database schema commands.")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    upgrade = db_sub.add_parser(
        "upgrade", help="apply pending migrations", description="Apply pending schema migrations to database.url."
    )
    _add_config_arg(upgrade)
    current = db_sub.add_parser(
        "current",
        help="show the schema revision",
        description="Show the database's schema revision and the latest one.",
    )
    _add_config_arg(current)
    backup = db_sub.add_parser(
        "backup",
        help="copy the SQLite database, safely while the daemon runs",
        description="Copy the SQLite database to PATH with SQLite's online backup API: a consistent copy of what "
        "was committed when it began, taken while the daemon keeps running. Written beside PATH first and checked "
        "(PRAGMA integrity_check) before it takes PATH's name. For Postgres use pg_dump (README, Backups).",
    )
    _add_config_arg(backup)
    backup.add_argument("path", type=Path, metavar="PATH", help="the backup file to write")
    backup.add_argument("--force", action="store_true", help="replace PATH if it exists")

    report = sub.add_parser(
        "report",
        help="print the SLA figures of a period",
        description="Print a period's figures (tickets, response and resolution times, share within SLA, "
        "breaches, backlog, per agent, channel or priority, each against the period before) from the database, "
        "read-only. The README's Reports section documents the JSON keys.",
    )
    _add_config_arg(report)
    add_report_arguments(report)

    forget = sub.add_parser(
        "forget",
        help="erase one person's data now",
        description="Erase everything stored of one person, whatever its age: their posts' text and handle, their "
        "tickets' customer fields, the replies to them and their set-aside feed entries (figures are kept). Their "
        "open tickets are closed. Prints what it erased; a handle with nothing stored erases nothing (exit 0). "
        "README: Data retention and erasure.",
    )
    _add_config_arg(forget)
    forget.add_argument(
        "handle", metavar="HANDLE", help="@user@instance (the @ may be left out); @user for the brand's instance"
    )

    demo = sub.add_parser(
        "demo",
        help="try mentiondesk without any accounts",
        description="Run the real daemon against a local mastodon-mock server with a few "
        "customers posting, SQLite in a temporary folder and Slack in dry-run "
        "mode. Needs: pip install 'mentiondesk[demo]'.",
    )
    demo.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20; 0 = until Ctrl-C)")
    demo.add_argument("--keep", action="store_true", help="keep the demo's SQLite database and print its path")
    return parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; `--config` given before the command counts unless repeated after it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config_before_command is not None:
        if args.command not in CONFIG_COMMANDS:
            parser.error(f"{args.command} reads no config file; --config is for: {', '.join(CONFIG_COMMANDS)}")
        args.config = args.config or args.config_before_command
    return args


def _load(path: Path | None) -> Config:
    return load_config(path or find_config(os.environ, Path.cwd()))


def _setup_logging(level: str, config: Config | None = None) -> None:
    from mentiondesk.bot.logs import secret_values, setup_logging

    if config is None:
        setup_logging(level)
        return
    setup_logging(level, log_format=config.settings.daemon.log_format, secrets=secret_values(config))


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT (Ctrl-C) sets, so the command ends through its own shutdown path."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run work until it ends (True) or a signal comes first (False: work is cancelled, and has ended)."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        return False
    task.result()
    return True


async def _run_daemon(config: Config) -> None:
    from mentiondesk.bot.daemon import Daemon
    from mentiondesk.bot.reload import Reloader
    from mentiondesk.bot.systemd import Notifier

    stop = _stop_on_signals()
    notifier = Notifier()
    daemon = Daemon(config)
    # SIGHUP (systemctl reload) re-reads the file the daemon started with; from the start on, since its default
    # action would end the process. systemd waits for READY=1 after RELOADING=1, refused reloads included.
    reloader = Reloader(daemon, Path(config.source), before=notifier.reloading, after=notifier.ready)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reloader.request)
    # Pinged from the start on: a start that hangs the loop gets the process restarted too.
    watchdog = asyncio.create_task(notifier.watchdog(daemon.dead_workers), name="systemd watchdog")
    notifier.status("starting")
    try:
        # A signal during the start ends it too: a start stuck on a call must not outlast the shutdown timeout.
        if not await _until_stopped(daemon.start(), stop):
            logger.info("stopped while starting")
            notifier.stopping()
            return
        reloader.start()
        try:
            await _until_stopped(_serve(daemon, notifier), stop)
        finally:
            await reloader.close()
            logger.info("stopping")
            notifier.stopping("stopping")
            # Stopping cancels the workers: that must not read as a dead worker.
            watchdog.cancel()
            await daemon.stop()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        watchdog.cancel()
        await asyncio.wait({watchdog})
        notifier.close()


async def _serve(daemon: Daemon, notifier: Notifier) -> None:
    """Run the daemon, telling systemd when it is ready and how it is doing."""
    work = asyncio.create_task(daemon.wait())
    report = asyncio.create_task(_report_to_systemd(daemon, notifier), name="systemd status")
    report.add_done_callback(_log_failure)
    try:
        await work
    finally:
        work.cancel()
        report.cancel()
        await asyncio.wait({work, report})


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s failed; carrying on without it", task.get_name(), exc_info=task.exception())


async def _report_to_systemd(daemon: Daemon, notifier: Notifier) -> None:
    if not notifier.enabled:
        return
    notifier.status("catching up with Mastodon")
    # READY=1 once every feed is read up to now, so that `systemctl start` returns with the backlog done. Mastodon
    # down or slow must not make systemd kill a daemon that is only waiting on it (TimeoutStartSec), so after
    # READY_WAIT_S it is ready anyway, and says so; it keeps trying, and tickets and Slack work meanwhile.
    if await daemon.wait_caught_up(READY_WAIT_S):
        last = await daemon.status_line()
    else:
        logger.warning("not caught up with Mastodon after %.0fs; carrying on trying", READY_WAIT_S)
        last = f"still catching up with Mastodon after {READY_WAIT_S:.0f}s"
    notifier.ready(last)
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    while True:
        await asyncio.sleep(STATUS_CHECK_S)
        line = await daemon.status_line()
        if line != last or loop.time() - sent_at >= STATUS_REFRESH_S:
            notifier.status(line)
            last, sent_at = line, loop.time()


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _setup_logging(config.settings.daemon.log_level, config)
    asyncio.run(_run_daemon(config))
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from mentiondesk.bot.check import report, run_checks

    config = _load(args.config)
    print(f"ok   config: {config.source}")
    results = asyncio.run(run_checks(config))
    return EXIT_OK if report(results, sys.stdout) else EXIT_FAILED


def _cmd_classify(args: argparse.Namespace) -> int:
    from mentiondesk.bot.classify.cli import load_model, make_judge, run_classify
    from mentiondesk.bot.config import ClassifierSettings, load_settings

    # Only the file named: a pipeline run from some directory must not pick up a config.toml lying there.
    settings = load_settings(args.config).classifier if args.config is not None else ClassifierSettings()
    classifier = load_model(settings, args.model)
    judge = make_judge(settings, classifier, args.threshold)
    # A stray invalid byte must become an error line for that input, not end the whole run.
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="replace")
    return run_classify(sys.stdin, sys.stdout, classifier, judge=judge)


def _cmd_classifier(args: argparse.Namespace) -> int:
    if args.classifier_command == "train":
        return _cmd_classifier_train(args)
    from mentiondesk.bot.classify.evaluation import (
        EvalDataError,
        as_json,
        as_table,
        evaluate,
        read_labelled,
        training_file_note,
    )
    from mentiondesk.bot.classify.loading import load_classifier

    try:
        posts = read_labelled(args.data)
    except EvalDataError as exc:
        print(f"mentiondesk: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    classifier = load_classifier(args.model)
    threshold = classifier.threshold if args.threshold is None else args.threshold
    result = evaluate(classifier, posts, threshold=threshold)
    # On stderr, so that --json output stays one object a script can read.
    if note := training_file_note(args.data, classifier.metadata):
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps(as_json(result, threshold=threshold)))
    else:
        print(as_table(result, threshold=threshold))
    return EXIT_OK


def _cmd_classifier_train(args: argparse.Namespace) -> int:
    try:
        from mentiondesk.bot.classify import retrain
    except ImportError as exc:  # scikit-learn or scipy missing: the daemon's install leaves them out
        print(f"mentiondesk: training needs scikit-learn ({exc}); install mentiondesk[train]", file=sys.stderr)
        return EXIT_CONFIG
    from mentiondesk.bot.classify.evaluation import EvalDataError

    if args.folds < 2:
        print("mentiondesk: --folds must be at least 2", file=sys.stderr)
        return EXIT_CONFIG
    config = _load(args.config)
    settings = config.settings
    _setup_logging("WARNING", config)
    try:
        result = asyncio.run(
            retrain.run(
                database_url=settings.database.url,
                data=args.data or retrain.DEFAULT_BASE_DATA,
                model_choice=settings.classifier.model_choice(),
                models_dir=settings.classifier.models_dir,
                force=args.force,
                n_folds=args.folds,
                progress=lambda msg: print(msg, file=sys.stderr, flush=True),
            )
        )
    except (retrain.RetrainError, EvalDataError) as exc:
        print(f"mentiondesk: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(result.report)
    for drop in result.drops:
        print(f"worse: {drop}")
    if not result.installed:
        print(
            f"wrote {result.version_path} but did not install it; rerun with --force to install it anyway",
            file=sys.stderr,
        )
        return EXIT_FAILED
    current = result.version_path.with_name("current.npz")
    print(f'installed {result.version_path.name} as {current}; set classifier.model = "{current}" and reload')
    return EXIT_OK


def _cmd_db(args: argparse.Namespace) -> int:
    from mentiondesk.storage.db import current_revision, head_revision, open_engine, upgrade
    from mentiondesk.storage.urls import describe_database

    config = _load(args.config)
    _setup_logging(config.settings.daemon.log_level, config)
    url = config.settings.database.url
    if args.db_command == "backup":
        return _db_backup(url, args.path, force=args.force)

    async def go() -> str | None:
        # Only upgrade may create the database: `db current` on a mistyped path must not leave one behind.
        engine = await open_engine(url, create=args.db_command == "upgrade")
        try:
            if args.db_command == "upgrade":
                await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    revision = asyncio.run(go())
    print(f"{describe_database(url)}: schema at {revision or 'nothing'} (latest {head_revision()})")
    return EXIT_OK


def _db_backup(url: str, path: Path, *, force: bool) -> int:
    from mentiondesk.storage.backup import backup_database

    # Synchronous on purpose: nothing else runs in this command, and sqlite3's backup call blocks anyway.
    backup = backup_database(url, path, force=force)
    print(f"backed up to {backup.path}: {backup.size_bytes} bytes, schema at {backup.revision or 'nothing'}")
    return EXIT_OK


def _cmd_forget(args: argparse.Namespace) -> int:
    from mentiondesk.bot.erasure import HandleError, forget, parse_handle
    from mentiondesk.bot.sla.policy import sla_book
    from mentiondesk.storage.db import DatabaseError, current_revision, head_revision, open_engine, session_factory

    config = _load(args.config)
    settings = config.settings
    try:
        handle = parse_handle(args.handle, instance_url=settings.mastodon.base_url)
    except HandleError as exc:
        print(f"mentiondesk: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging("WARNING")

    async def go() -> str:
        engine = await open_engine(settings.database.url, create=False)
        try:
            current, head = await current_revision(engine), head_revision()
            if current != head:
                raise DatabaseError(
                    f"database schema is at {current or 'nothing'}, this version needs {head}: "
                    "run `mentiondesk db upgrade`"
                )
            forgotten = await forget(session_factory(engine), sla_book(settings.sla), handle)
            return forgotten.summary()
        finally:
            await engine.dispose()

    print(asyncio.run(go()))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from mentiondesk.bot.reports.cli import run_report

    config = _load(args.config)
    _setup_logging("WARNING", config)
    run_report(config, args, sys.stdout, sys.stderr)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from mentiondesk.bot.demo import run_demo

    _setup_logging("WARNING")

    async def go() -> int:
        return await run_demo(seconds=args.seconds, out=sys.stdout, stop=_stop_on_signals(), keep=args.keep)

    return asyncio.run(go())


COMMANDS = {
    "run": _cmd_run,
    "check": _cmd_check,
    "classify": _cmd_classify,
    "classifier": _cmd_classifier,
    "db": _cmd_db,
    "report": _cmd_report,
    "forget": _cmd_forget,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"mentiondesk: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _known_failure(exc)
        if message is None:
            raise
        print(f"mentiondesk: {message}", file=sys.stderr)
        return EXIT_FAILED


def _known_failure(exc: Exception) -> str | None:
    """A one-line explanation for failures a person can fix, None for bugs (which keep their traceback)."""
    from mastodon.errors import MastodonError

    from mentiondesk.bot.classify.model import ClassifierError
    from mentiondesk.bot.mastodon.explain import MastodonSetupError
    from mentiondesk.bot.slack.problems import SlackSetupError
    from mentiondesk.storage.db import DatabaseError

    if isinstance(exc, DatabaseError | ClassifierError | SlackSetupError):
        return str(exc)
    if isinstance(exc, MastodonSetupError):
        return str(exc)  # already says what to fix
    if isinstance(exc, MastodonError):
        return f"cannot use Mastodon: {exc}"
    from mentiondesk.bot.daemon import LeadershipError

    # Daemon.wait() reports it as the election task's failure; the cause is what a person reads.
    lost = exc if isinstance(exc, LeadershipError) else exc.__cause__
    if isinstance(lost, LeadershipError):
        return f"{lost}; exiting rather than risk two leaders (the service manager starts a fresh process)"
    return None
