"""kpod's subcommands: one module per command (or small group of commands).

To add a command, add a module here; nothing else changes::

    # core/kpod/commands/pull.py
    from crio.kpod.common import Context

    def register(sub) -> None:
        parser = sub.add_parser("pull", help="pull an image")
        parser.add_argument("image")
        parser.set_defaults(func=run)

    async def run(args, ctx: Context) -> int:
        store = await ctx.store()      # opened from --root/--runroot/crio.toml
        ...
        return 0                       # exit status

Raise a :class:`crio.errors.CrioError` for failures: kpod prints it on one
line and exits 1 (125 for :class:`crio.kpod.common.UsageError`).
``ctx.config()`` gives crio.toml with kpod's flags applied.
"""
