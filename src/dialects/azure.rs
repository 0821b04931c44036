//! Azure OpenAI: OpenAI bodies and answers on `/openai/deployments/{deployment}/...?api-version=`, keyed by `api-key`.

use serde_json::Value;

use super::openai::{self, OpenAi};
use super::{AnswerMap, Canonical, Egress, Op, Reader, Site, TranslateError};

pub struct Azure;

impl Egress for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }

    fn serves(&self, op: Op) -> bool {
        op != Op::CountTokens
    }

    fn path(&self, site: &Site<'_>, op: Op) -> String {
        format!(
            "{}/openai/deployments/{}/{}?api-version={}",
            site.base_path,
            site.deployment.unwrap_or_default(),
            op.suffix(),
            site.api_version
        )
    }

    fn body(
        &self,
        req: &Canonical,
        model_id: &str,
        edits: &super::Edits,
    ) -> Result<Vec<u8>, TranslateError> {
        // the deployment in the path chooses the model; `model` is sent as OpenAI's would be
        openai::body(req, model_id, edits)
    }

    fn answer(&self, sse: bool, include_usage: bool) -> Option<Box<dyn AnswerMap>> {
        OpenAi.answer(sse, include_usage)
    }

    fn error(&self, status: u16, body: &Value) -> (u16, Value) {
        (status, body.clone())
    }

    fn reader(&self) -> &'static dyn Reader {
        &OpenAi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_deployment_and_the_api_version() {
        let site = Site {
            base_path: "",
            deployment: Some("gpt4o-prod"),
            api_version: "2024-10-21",
        };
        assert_eq!(
            Azure.path(&site, Op::Embeddings),
            "/openai/deployments/gpt4o-prod/embeddings?api-version=2024-10-21"
        );
        assert!(Azure.answer(false, false).is_none());
    }
}
