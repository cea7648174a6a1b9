//! `rung.v1.AudienceService`: validate, make one engine call, convert back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::audience::definition::Definition;
use crate::audience::funnel::TimeRange;
use crate::domain::Millis;
use crate::engine::audience::{ExportQuery, Member, ResumeToken, SegmentInfo};
use crate::engine::Engine;
use crate::engine::EngineError;

use super::convert;
use super::proto::audience_service_server::AudienceService;
use super::proto::{
    CountSegmentRequest, CountSegmentResponse, DeleteSegmentRequest, DeleteSegmentResponse,
    ExportSegmentRequest, FunnelRequest, FunnelResponse, GetSegmentRequest, GetSegmentResponse,
    ListSegmentsRequest, ListSegmentsResponse, PutSegmentRequest, PutSegmentResponse, Segment,
    SegmentMember,
};
use super::status::FieldError;

const MAX_NAME: usize = 64;

pub struct AudienceApi {
    engine: Arc<Engine>,
}

impl AudienceApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        AudienceApi { engine }
    }

    /// The definition a Count or Export asks for, and the saved segment's
    /// name when it names one (an export checks it still exists).
    async fn target(
        &self,
        name: &str,
        definition: &str,
    ) -> Result<(Definition, Option<String>), Status> {
        match (name.is_empty(), definition.is_empty()) {
            (false, true) => {
                segment_name(name)?;
                let def = self.engine.named_definition(name).await?;
                Ok((def, Some(name.to_string())))
            }
            (true, false) => {
                let def = self
                    .engine
                    .parse_definition(definition)
                    .map_err(|e| FieldError::new("definition", e))?;
                Ok((def, None))
            }
            (true, true) => {
                Err(FieldError::new("name", "give a segment name or a definition").into())
            }
            (false, false) => Err(FieldError::new(
                "definition",
                "give either a segment name or a definition, not both",
            )
            .into()),
        }
    }
}

/// 1 to 64 of a–z, 0–9, '_' and '-': safe in URLs, file names and CSV.
pub(crate) fn segment_name(name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(FieldError::new(
            "name",
            format!("must be 1 to {MAX_NAME} characters long"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(FieldError::new(
            "name",
            format!("contains {c:?}; use lowercase letters, digits, '_' and '-'"),
        ));
    }
    Ok(())
}

pub(crate) fn as_of(
    t: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<Option<Millis>, FieldError> {
    t.map(|t| convert::timestamp(t).map_err(|e| FieldError::new(field, e)))
        .transpose()
}

fn segment(info: SegmentInfo) -> Segment {
    Segment {
        name: info.name,
        definition: info.definition,
        description: info.description,
        builtin: info.builtin,
        updated_at: info.updated_at.map(convert::to_timestamp),
        canonical_json: info.canonical_json,
    }
}

fn member(m: Member) -> SegmentMember {
    SegmentMember {
        resume_token: m.resume_token,
        visitor_id: m.visitor,
        probability: m.probability,
        ladder_score: m.ladder_score,
        stage: convert::stage(m.stage) as i32,
        band: convert::band(m.band) as i32,
        rung: m.rung.unwrap_or_default(),
        last_seen: m.last_seen.map(convert::to_timestamp),
        matched_path: m.matched_path,
        matched_clause: m.matched_clause,
    }
}

/// Members sent as the engine produces them, chunk by chunk.
pub struct MemberStream {
    rx: mpsc::Receiver<Result<Vec<Member>, EngineError>>,
    buffered: std::vec::IntoIter<Member>,
}

impl Stream for MemberStream {
    type Item = Result<SegmentMember, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(m) = self.buffered.next() {
                return Poll::Ready(Some(Ok(member(m))));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.buffered = chunk.into_iter(),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[tonic::async_trait]
impl AudienceService for AudienceApi {
    async fn put_segment(
        &self,
        request: Request<PutSegmentRequest>,
    ) -> Result<Response<PutSegmentResponse>, Status> {
        let req = request.into_inner();
        segment_name(&req.name)?;
        if req.definition.is_empty() {
            return Err(FieldError::new("definition", "must not be empty").into());
        }
        let (info, replaced) = self
            .engine
            .put_segment(
                &req.name,
                &req.definition,
                &req.description,
                req.overwrite,
                Millis::now(),
            )
            .await?;
        tracing::info!(segment = %info.name, replaced, "segment saved");
        Ok(Response::new(PutSegmentResponse {
            segment: Some(segment(info)),
            replaced,
        }))
    }

    async fn get_segment(
        &self,
        request: Request<GetSegmentRequest>,
    ) -> Result<Response<GetSegmentResponse>, Status> {
        let name = request.into_inner().name;
        segment_name(&name)?;
        let info = self.engine.segment(&name).await?;
        Ok(Response::new(GetSegmentResponse {
            segment: Some(segment(info)),
        }))
    }

    async fn list_segments(
        &self,
        _request: Request<ListSegmentsRequest>,
    ) -> Result<Response<ListSegmentsResponse>, Status> {
        let all = self.engine.segments().await?;
        Ok(Response::new(ListSegmentsResponse {
            segments: all.into_iter().map(segment).collect(),
        }))
    }

    async fn delete_segment(
        &self,
        request: Request<DeleteSegmentRequest>,
    ) -> Result<Response<DeleteSegmentResponse>, Status> {
        let name = request.into_inner().name;
        segment_name(&name)?;
        self.engine.delete_segment(&name).await?;
        tracing::info!(segment = %name, "segment deleted");
        Ok(Response::new(DeleteSegmentResponse {}))
    }

    async fn count_segment(
        &self,
        request: Request<CountSegmentRequest>,
    ) -> Result<Response<CountSegmentResponse>, Status> {
        let req = request.into_inner();
        let as_of = as_of(req.as_of.as_ref(), "as_of")?.unwrap_or_else(Millis::now);
        let (def, _) = self.target(&req.name, &req.definition).await?;
        let counted = self.engine.count_segment(Arc::new(def), as_of).await?;
        Ok(Response::new(CountSegmentResponse {
            count: counted.count,
            scanned: counted.scanned,
            as_of: Some(convert::to_timestamp(as_of)),
        }))
    }

    type ExportSegmentStream = MemberStream;

    async fn export_segment(
        &self,
        request: Request<ExportSegmentRequest>,
    ) -> Result<Response<MemberStream>, Status> {
        let req = request.into_inner();
        let asked = as_of(req.as_of.as_ref(), "as_of")?;
        let (def, name) = self.target(&req.name, &req.definition).await?;
        let (as_of, after) = if req.resume_token.is_empty() {
            (asked.unwrap_or_else(Millis::now), None)
        } else {
            let token = ResumeToken::decode(&req.resume_token)
                .ok_or_else(|| FieldError::new("resume_token", "is not a token rung issued"))?;
            if token.definition != ResumeToken::fingerprint(&def) {
                return Err(FieldError::new(
                    "resume_token",
                    "was issued for another definition; start a new export",
                )
                .into());
            }
            (token.as_of, Some(token.after))
        };
        let rx = self.engine.export(ExportQuery {
            definition: Arc::new(def),
            name,
            as_of,
            after,
        });
        Ok(Response::new(MemberStream {
            rx,
            buffered: Vec::new().into_iter(),
        }))
    }

    async fn funnel(
        &self,
        request: Request<FunnelRequest>,
    ) -> Result<Response<FunnelResponse>, Status> {
        let req = request.into_inner();
        let from = as_of(req.from.as_ref(), "from")?
            .ok_or_else(|| FieldError::new("from", "is required"))?;
        let to =
            as_of(req.to.as_ref(), "to")?.ok_or_else(|| FieldError::new("to", "is required"))?;
        if to <= from {
            return Err(FieldError::new("to", "must be after from").into());
        }
        let range = TimeRange { from, to };
        let report = self.engine.funnel(range).await?;
        Ok(Response::new(convert::funnel_response(report)))
    }
}
