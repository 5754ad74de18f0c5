"""``python -m ccc.agents``: run one instance of the agents service until SIGTERM."""

from __future__ import annotations

from .service import service


def main() -> None:
    service.run()


if __name__ == "__main__":
    main()
