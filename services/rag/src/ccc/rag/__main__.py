"""``python -m ccc.rag``: run the rag service until SIGTERM."""

from .service import service

if __name__ == "__main__":
    service.run()
