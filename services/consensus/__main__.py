from services.common.runtime import serve
from services.consensus.app import ConsensusSettings, build_app

settings = ConsensusSettings()
serve(build_app(settings), settings)
