from services.common.runtime import serve
from services.gateway.app import GatewaySettings, build_app

settings = GatewaySettings()
serve(build_app(settings), settings)
