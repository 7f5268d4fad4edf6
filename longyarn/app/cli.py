"""The `longyarn` command line. Heavy modules (textual, torch) are imported per subcommand."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from longyarn.recurrent_core.errors import InvalidInput, LongyarnError

from .bible_cli import add_bible_parser, run_bible

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--db", help="database file or SQLAlchemy URL (default: the user data dir)")
    group.add_argument("--backend", choices=["openai", "local"], help="which kind of model to use")
    group.add_argument("--model", help="model name on the OpenAI-compatible server")
    group.add_argument("--base-url", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    group.add_argument(
        "--checkpoint",
        help="a local RWKV-7 checkpoint (.pth or a longyarn model folder), or the URL of a "
        "`longyarn serve` that runs one",
    )
    group.add_argument(
        # Checked with the other settings, so a wrong value is one sentence, not a usage text.
        "--weights", metavar="{half,fp32,fp16,bf16,int8}",
        help="how the local model keeps its weights on a CPU: half (the default: fp16 or bf16, "
        "as the checkpoint allows), fp32 (exact, slowest), or int8 (fastest, a little less exact)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longyarn",
        description="Write arbitrarily long fiction with a language model, one paragraph at a time.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    write = commands.add_parser("write", help="the writers' terminal UI")
    write.add_argument("--story", help="open this story")
    _model_options(write)

    read = commands.add_parser("read", help="read stories as interactive fiction")
    read.add_argument("--story", help="open this story")
    read.add_argument("--serve", action="store_true", help="serve the web reader to browsers")
    read.add_argument("--host", default="127.0.0.1")
    read.add_argument("--port", type=int, default=8000)
    read.add_argument("--workers", type=int, default=1, metavar="N",
                      help="with --serve: server processes sharing the database (default 1)")
    read.add_argument("--terminal", action="store_true",
                      help="with --serve: the terminal reader in the browser instead "
                      "(textual-serve, one process per reader)")
    _model_options(read)

    batch = commands.add_parser("batch", help="write whole novels with no one at the keyboard")
    batch.add_argument("--premise", help="what the story is about")
    batch.add_argument("--resume", metavar="ID", help="continue this story (its own premise is kept)")
    batch.add_argument("--premises", type=Path, metavar="FILE", help="one premise per line")
    batch.add_argument("--genre", default="", help="e.g. 'gothic mystery'")
    batch.add_argument("--paragraphs", type=int, required=True, metavar="N", help="length of each novel")
    batch.add_argument("--out", type=Path, help="write the novel here (.md, .txt or .json); a folder with --premises")
    batch.add_argument("--concurrency", type=int, default=1, metavar="K", help="novels written at once")
    batch.add_argument("--choose", choices=["first", "random", "model"], default="first",
                       help="how the next instruction is picked from the three")
    batch.add_argument("--seed", type=int, default=0, help="seed for --choose random")
    batch.add_argument("--chapter-every", type=int, default=0, metavar="N",
                       help="end a chapter, with the model's summary, every N paragraphs at the latest, "
                       "or where the model marks a scene break (once it holds N/2); 0, the default: "
                       "no chapters (20 to 30 suit a novel)")
    batch.add_argument("--quiet", action="store_true", help="print only the story id lines")
    _model_options(batch)

    export = commands.add_parser("export", help="write a story out")
    export.add_argument("story_id", metavar="ID")
    export.add_argument("--format", choices=["md", "txt", "json", "docx", "epub"], default="md")
    export.add_argument("--out", type=Path, help="file to write (default: standard output)")
    export.add_argument("--author", help="with --format epub: the book's author (default: the `author` "
                        "setting, else Anonymous)")
    export.add_argument("--language", default="en", help="with --format epub: the book's language, "
                        "e.g. en, de, pt-BR (default: en)")
    _model_options(export)

    add_bible_parser(commands)

    report = commands.add_parser("report", help="a long-form quality report of a story, as one HTML page")
    report.add_argument("story_id", metavar="ID")
    report.add_argument("--out", type=Path, help="the HTML file to write (default: report-ID.html)")
    _model_options(report)

    own_prompts = commands.add_parser(
        "prompts", help="your own prompt templates: start one, see how it differs, or go back to ours"
    )
    own_prompts.add_argument("action", choices=["list", "edit", "diff", "reset"],
                             help="list yours; edit ROLE (copies ours to start from); diff; reset")
    own_prompts.add_argument("role", nargs="?", help="writer, memory, planner, opening, chooser, repair, summary, passage or chapter_summary")
    own_prompts.add_argument("--story", metavar="ID", help="one story's own templates, not those of every story")

    serve = commands.add_parser("serve", help="an OpenAI-compatible server for the local model")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--api-key", metavar="KEY",
                       help="requests must send it as a Bearer token (default: $LONGYARN_API_KEY); "
                       "required to listen beyond 127.0.0.1")
    _model_options(serve)
    return parser


def _settings(args: argparse.Namespace):
    from .settings import load_settings

    return load_settings(
        db=getattr(args, "db", None),
        backend=getattr(args, "backend", None),
        model=getattr(args, "model", None),
        base_url=getattr(args, "base_url", None),
        checkpoint=getattr(args, "checkpoint", None),
        weights=getattr(args, "weights", None),
    )


def _open_store(settings, *, read_only: bool = False):
    from longyarn.storage.db import open_store

    return open_store(settings.db, read_only=read_only)


def _engine(settings):
    from .session.engine_host import make_engine

    return make_engine(_open_store(settings), settings)


def run_batch(args: argparse.Namespace) -> int:
    from .batch import NovelJob, check_writable, read_premises, write_novel, write_novels
    from .batch_chapters import check_chapter_every
    from .batch_progress import reporter_for

    if not (args.premise or args.resume or args.premises):
        raise InvalidInput(
            "batch needs --premise TEXT, --premises FILE or --resume ID; nothing was written; add one."
        )
    if args.premises and (args.premise or args.resume):
        raise InvalidInput(
            "--premises writes new novels and cannot be combined with --premise or --resume; "
            "nothing was written; run them separately."
        )
    # Checked before the model loads, so a mistyped option fails at once.
    if args.paragraphs < 1:
        raise InvalidInput("--paragraphs must be at least 1; nothing was written; pass a positive number.")
    if args.concurrency < 1:
        raise InvalidInput("--concurrency must be at least 1; nothing was written; pass a positive number.")
    check_chapter_every(args.chapter_every)
    jobs = read_premises(args.premises, args.genre) if args.premises else []
    settings = _settings(args)
    reporter = reporter_for(args.quiet)
    if args.out:
        check_writable(args.out, folder=bool(args.premises))
    reporter.progress(settings.describe_model())
    engine = _engine(settings)
    started: list[str] = []

    async def main() -> int:
        try:
            if args.premises:
                jobs_out = [
                    NovelJob(premise=j.premise, genre=j.genre, out_dir=args.out, chapter_every=args.chapter_every)
                    for j in jobs
                ]
                outcomes = await write_novels(
                    engine, jobs_out, paragraphs=args.paragraphs, concurrency=args.concurrency,
                    choose=args.choose, seed=args.seed, reporter=reporter, on_story=started.append,
                )
                failed = [o for o in outcomes if isinstance(o, BaseException)]
                for error in failed:
                    reporter.error(str(error))
                return EXIT_ERROR if failed else 0
            if args.resume and args.premise:
                reporter.progress(f"Resuming story {args.resume}; --premise is ignored (the story keeps its own).")
            job = NovelJob(
                premise=args.premise, genre=args.genre, resume_id=args.resume, out=args.out,
                chapter_every=args.chapter_every,
            )
            outcome = await write_novel(
                engine, job, paragraphs=args.paragraphs, choose=args.choose, seed=args.seed,
                reporter=reporter, on_story=started.append,
            )
            where = f" in {outcome.out}" if outcome.out else ""
            reporter.progress(f"Done: {outcome.paragraphs} paragraphs{where}.")
            return 0
        except BaseException:
            reporter.close()
            _say_how_to_resume(reporter, started, args.paragraphs)
            raise
        finally:
            reporter.close()
            await engine.backend.aclose()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        if not started:
            reporter.error("Stopped before any story was created; nothing was saved.")
        return EXIT_INTERRUPTED


def _say_how_to_resume(reporter, started: list[str], paragraphs: int) -> None:
    for story_id in started:
        reporter.error(
            f"Story {story_id} stopped; every finished paragraph is saved; continue with "
            f"`longyarn batch --resume {story_id} --paragraphs {paragraphs}`."
        )


def run_export(args: argparse.Namespace) -> int:
    from .export import export_story, write_atomically

    settings = _settings(args)
    if "://" not in settings.db and not Path(settings.db).expanduser().exists():
        raise InvalidInput(
            f"There is no database at {settings.db}, so there is no story {args.story_id} to export; "
            "nothing was written; check --db."
        )
    store = _open_store(settings, read_only=True)  # exporting only reads
    if args.format == "epub":
        from .epub import check_language, export_epub

        check_language(args.language)  # before the story is read: one sentence, nothing written
        text: str | bytes = export_epub(
            store, args.story_id, author=args.author or settings.author, language=args.language
        )
    else:
        text = export_story(store, args.story_id, args.format)
    if args.out:
        write_atomically(args.out, text)
        print(f"Wrote {args.out}", file=sys.stderr)
    elif isinstance(text, bytes):
        if sys.stdout.isatty():
            raise InvalidInput(
                f"A .{args.format} file is not for a terminal; nothing was written; add --out "
                f"story.{args.format}, or redirect the output to a file."
            )
        sys.stdout.buffer.write(text)
    else:
        sys.stdout.write(text)
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .export import write_atomically
    from .report.figures import story_figures
    from .report.page import render, summary_lines

    figures = story_figures(_open_store(_settings(args)), args.story_id)
    out = args.out or Path(f"report-{args.story_id}.html")
    write_atomically(out, render(figures))
    print("\n".join(summary_lines(figures)))
    print(f"Wrote {out}", file=sys.stderr)
    return 0


def run_write(args: argparse.Namespace) -> int:
    from .tui import run_write as run_writers_ui

    run_writers_ui(_settings(args), story_id=args.story)
    return 0


def run_read(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.serve and args.terminal:
        from .reader.web import serve_reader as serve_terminal_reader

        serve_terminal_reader(settings, host=args.host, port=args.port, story_id=args.story)
    elif args.serve:
        from .web.serving import serve_reader

        serve_reader(settings, host=args.host, port=args.port, story_id=args.story, workers=args.workers)
    else:
        from .reader import run_read as run_reader

        run_reader(settings, story_id=args.story)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import os

    from .serve import API_KEY_ENV, run_server

    # The key from the flag or LONGYARN_API_KEY only: never OPENAI_API_KEY or the config
    # file's key, which are for reaching other servers.
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    run_server(_settings(args), host=args.host, port=args.port, api_key=api_key)
    return 0


def run_prompts(args: argparse.Namespace) -> int:
    from . import prompt_overrides as own

    if args.action == "list":
        for role, path in own.own_templates(args.story).items():
            print(f"{role}: {path}")
        print(f"(your templates live in {own.own_folder(args.story)}; the others are longyarn's)", file=sys.stderr)
    elif args.action == "edit":
        if not args.role:
            raise InvalidInput("Name the role to edit, e.g. `longyarn prompts edit writer`; nothing was changed.")
        print(own.start_own(args.role, args.story))
    elif args.action == "diff":
        sys.stdout.write(own.diff(args.role, args.story))
    else:
        for path in own.reset(args.role, args.story):
            print(f"Set {path.name} aside ({path}); longyarn's own template applies again.", file=sys.stderr)
    for problem in own.check(args.role, args.story) if args.action != "reset" else ():
        print(f"error: {problem}", file=sys.stderr)
    return 0


COMMANDS = {
    "prompts": run_prompts,
    "write": run_write,
    "read": run_read,
    "batch": run_batch,
    "export": run_export,
    "report": run_report,
    "bible": run_bible,
    "serve": run_serve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LongyarnError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        print(
            f"error: could not use{where} ({error.strerror or error}); what was saved before is "
            "kept; check the path and its permissions, then run the command again.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("Stopped.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a database failure, say; never a traceback for the user
        if type(error).__module__.split(".")[0] != "sqlalchemy":
            raise
        print(
            f"error: the database failed ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
            "every paragraph committed before is kept; check --db, then run the command again.",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
