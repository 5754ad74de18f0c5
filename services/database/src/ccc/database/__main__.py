"""``python -m ccc.database``: run the database service until SIGTERM."""

from .service import service

if __name__ == "__main__":
    service.run()
