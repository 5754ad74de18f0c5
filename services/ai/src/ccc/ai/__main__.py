from ccc.ai.service import service

service.run()
