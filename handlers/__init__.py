"""What happens on each event. Each module owns one kind of event and registers on its own router."""

from bot.dispatch import Router
from handlers import mention


def build_router() -> Router:
    router = Router()
    router.include(mention.router)
    return router
