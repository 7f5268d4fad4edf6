from tests.app.test_tui import PARAGRAPHS, build_app, seed_story, wait_for_screen
from tests.conftest import make_engine
from longyarn.app.tui.screens.writing import WritingScreen


async def test_dbg(store, server, embedder):
    from tests.scripted_server import Reply
    from longyarn.app.tui.screens.craft_dialogs import ProposedChangeDialog
    story = seed_story(store, embedder, PARAGRAPHS)
    app = build_app(store, make_engine(store, server, embedder), story_id=story.id)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_for_screen(pilot, WritingScreen)
        screen.story_view.focus()
        await pilot.press("e")
        await pilot.pause()
        area = pilot.app.screen.query_one("#paragraph")
        start = PARAGRAPHS[2].index("a brass key")
        area.selection = type(area.selection)(
            area.document.get_location_from_index(start),
            area.document.get_location_from_index(start + len("a brass key")),
        )
        await pilot.press("ctrl+r")
        await pilot.pause()
        server.enqueue(Reply("an old iron key, cold as river water"))
        await pilot.press("ctrl+s")
        await wait_for_screen(pilot, ProposedChangeDialog)
        def where():
            return [(type(s).__name__, [str(t._notification.message) for t in s.query("Toast")]) for s in pilot.app.screen_stack]
        print("A", where(), len(pilot.app._notifications))
        pilot.app.clear_notifications()
        for s in pilot.app.screen_stack:
            await s.query("Toast").remove()
        print("B", where())
        await pilot.pause()
        print("C", where())
        await pilot.pause(0.5)
        print("D", where(), len(pilot.app._notifications))
