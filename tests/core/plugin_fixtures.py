"""Small plugins the core tests enable and disable. Importable by subprocesses too."""
import os
import time

import peewee as pw

from postroom.core.models import BaseModel
from postroom.core.plugins import PluginInfo, hookimpl
from postroom.core.records import RecordType
from postroom.core.scheduler import ActionSpec

HERE = os.path.dirname(__file__)


class Widget(BaseModel):
    label = pw.CharField()

    class Meta:
        table_name = "test_widget"


class Base:
    """A plugin that provides a record type and a table (with its migration)."""
    PLUGIN = PluginInfo("base_fx", "a base test plugin")

    @hookimpl
    def postroom_record_types(self, register):
        register(RecordType("fx.thing", "Thing"))

    @hookimpl
    def postroom_models(self):
        return [Widget]

    @hookimpl
    def postroom_migrations(self):
        return ("base_fx", os.path.join(HERE, "fx_migrations"))


class Dependent:
    """A plugin that requires base_fx and adds a CLI command."""
    PLUGIN = PluginInfo("dependent_fx", "needs base_fx", requires=("base_fx",))

    def __init__(self):
        self.posted = []

    @hookimpl
    def postroom_message_posted(self, host, message, notified):
        self.posted.append(message.id)

    @hookimpl
    def postroom_cli_commands(self, cli):
        import click

        @click.command("fx-hello")
        def hello():
            """Say hello (exists only while dependent_fx is enabled)."""
            click.echo("hello from dependent_fx")
        cli.add_command(hello)


class EmailChannel:
    """Claims email delivery without sending anything: notifications stay `ready`."""
    PLUGIN = PluginInfo("email_fx", "pretends to deliver email")

    @hookimpl
    def postroom_email_channel(self, host):
        return True


class Actions:
    """Scheduled actions with controllable behaviour, for scheduler tests."""
    PLUGIN = PluginInfo("actions_fx", "test actions")

    def __init__(self):
        self.runs = []
        self.remaining = []   # successive `remaining` values the batch action reports
        self.fail = False
        self.sleep = 0.0
        self.journal = None   # a file path: each run appends "start end pid"

    def _batch(self, host, run):
        self.runs.append(("batch", host.clock.now()))
        left = self.remaining.pop(0) if self.remaining else 0
        run.progress(1, left)

    def _flaky(self, host, run):
        self.runs.append(("flaky", host.clock.now()))
        if self.fail:
            raise RuntimeError("SMTP server on fire")

    def _slow(self, host, run):
        start = time.time()
        time.sleep(self.sleep)
        if self.journal:
            with open(self.journal, "a") as fh:
                fh.write(f"{start} {time.time()} {os.getpid()}\n")

    @hookimpl
    def postroom_scheduled_actions(self):
        return [ActionSpec("fx.batch", "FX: Batch", self._batch, 1, "hours"),
                ActionSpec("fx.flaky", "FX: Flaky", self._flaky, 1, "days"),
                ActionSpec("fx.slow", "FX: Slow", self._slow, 1, "days")]
