"""The command palette (Ctrl+P): every action of the screen in view, and the app's own."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode

# longyarn's own classes, in whichever of its packages they live (the shared widgets too).
_PACKAGE = "longyarn."


def _own_actions(node: DOMNode) -> set[str]:
    """Actions bound by longyarn's own classes of `node`: not the text-editing and cursor keys
    that Textual's widgets (the focused Input, say) bring, which would bury the writer's commands."""
    actions: set[str] = set()
    for cls in type(node).__mro__:
        if cls.__module__.startswith(_PACKAGE):
            for binding in cls.__dict__.get("BINDINGS", ()):
                actions.add(binding.action if isinstance(binding, Binding) else binding[1])
    return actions


@dataclass(frozen=True)
class Command:
    title: str
    help: str
    action: str
    node: DOMNode


class LongyarnCommands(Provider):
    """Offers each binding of the current screen (and the app) that can run right now."""

    def _commands(self) -> list[Command]:
        """What the key bindings in effect on the screen offer now (keymap applied)."""
        found: dict[str, Command] = {}
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if not active.enabled or not binding.description or binding.system:
                continue
            if binding.action.endswith("command_palette") or binding.action in found:
                continue
            if binding.action not in _own_actions(active.node):
                continue
            display = self.app.get_key_display(binding)
            help_text = binding.tooltip or f"key: {display}"
            found[binding.action] = Command(binding.description, help_text, binding.action, active.node)
        return sorted(found.values(), key=lambda command: command.title)

    async def _run(self, command: Command) -> None:
        await self.app.run_action(command.action, command.node)

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.title, partial(self._run, command), help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(score, matcher.highlight(command.title), partial(self._run, command), help=command.help)
