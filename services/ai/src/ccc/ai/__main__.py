from .service import service

service.run()
