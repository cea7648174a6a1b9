//! `rung.v1.AudienceService`: validate, make engine calls, convert back.
//! Scans run on the blocking pool so they never stall scoring calls.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::audience::definition::Definition;
use crate::audience::funnel::TimeRange;
use crate::domain::Millis;
use crate::engine::audience::{AudienceError, Member, ResumeToken, SegmentInfo};
use crate::engine::Engine;

use super::convert;
use super::proto::audience_service_server::AudienceService;
use super::proto::{
    CountSegmentRequest, CountSegmentResponse, DeleteSegmentRequest, DeleteSegmentResponse,
    ExportSegmentRequest, FunnelRequest, FunnelResponse, GetSegmentRequest, GetSegmentResponse,
    ListSegmentsRequest, ListSegmentsResponse, PutSegmentRequest, PutSegmentResponse, Segment,
    SegmentMember,
};
use super::status::FieldError;

/// Chunks of members buffered ahead of a slow reader.
const EXPORT_AHEAD: usize = 4;
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
    fn target(&self, name: &str, definition: &str) -> Result<(Definition, Option<String>), Status> {
        match (name.is_empty(), definition.is_empty()) {
            (false, true) => {
                segment_name(name)?;
                Ok((self.engine.named_definition(name)?, Some(name.to_string())))
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
fn segment_name(name: &str) -> Result<(), FieldError> {
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

fn as_of(t: Option<&prost_types::Timestamp>, field: &str) -> Result<Option<Millis>, FieldError> {
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

fn member(m: Member, def: &Definition, as_of: Millis, fingerprint: u64) -> SegmentMember {
    let (path, clause) = def.node(m.matched);
    let token = ResumeToken {
        as_of,
        definition: fingerprint,
        after: m.visitor.clone(),
    };
    SegmentMember {
        resume_token: token.encode(),
        visitor_id: m.visitor,
        probability: m.probability,
        ladder_score: m.ladder_score,
        stage: convert::stage(m.stage) as i32,
        band: convert::band(m.band) as i32,
        rung: m.rung.unwrap_or_default(),
        last_seen: m.last_seen.map(convert::to_timestamp),
        matched_path: path.to_string(),
        matched_clause: clause.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AudienceError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "audience task failed");
            Status::internal("internal error")
        })?
        .map_err(Status::from)
}

/// Members sent as the engine produces them, chunk by chunk.
pub struct MemberStream {
    rx: mpsc::Receiver<Result<Vec<SegmentMember>, Status>>,
    buffered: std::vec::IntoIter<SegmentMember>,
}

impl Stream for MemberStream {
    type Item = Result<SegmentMember, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(m) = self.buffered.next() {
                return Poll::Ready(Some(Ok(m)));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.buffered = chunk.into_iter(),
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Some(Err(status))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Produces an export's chunks until the end, a failure, the segment's
/// deletion, or the client going away.
async fn run_export(
    engine: Arc<Engine>,
    def: Arc<Definition>,
    name: Option<String>,
    as_of: Millis,
    mut after: Option<String>,
    tx: mpsc::Sender<Result<Vec<SegmentMember>, Status>>,
) {
    let fingerprint = ResumeToken::fingerprint(&def);
    let mut sent = 0u64;
    loop {
        let (engine2, def2, name2, after2) =
            (engine.clone(), def.clone(), name.clone(), after.clone());
        let chunk = blocking(move || {
            if let Some(n) = &name2 {
                if !engine2.segment_exists(n)? {
                    return Err(AudienceError::NotFound(n.clone()));
                }
            }
            Ok(engine2.export_chunk(&def2, as_of, after2.as_deref())?)
        })
        .await;
        let chunk = match chunk {
            Ok(c) => c,
            Err(status) => {
                tracing::info!(code = ?status.code(), sent, "export ended early");
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let members: Vec<SegmentMember> = chunk
            .members
            .into_iter()
            .map(|m| member(m, &def, as_of, fingerprint))
            .collect();
        sent += members.len() as u64;
        if !members.is_empty() && tx.send(Ok(members)).await.is_err() {
            tracing::info!(sent, "export abandoned by the client");
            return;
        }
        if chunk.done {
            tracing::info!(
                sent,
                segment = name.as_deref().unwrap_or("(inline)"),
                "export finished"
            );
            return;
        }
        after = chunk.last_key;
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
        let engine = self.engine.clone();
        let info = blocking(move || engine.segment(&name)).await?;
        Ok(Response::new(GetSegmentResponse {
            segment: Some(segment(info)),
        }))
    }

    async fn list_segments(
        &self,
        _request: Request<ListSegmentsRequest>,
    ) -> Result<Response<ListSegmentsResponse>, Status> {
        let engine = self.engine.clone();
        let all = blocking(move || engine.segments()).await?;
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
        let (def, _) = self.target(&req.name, &req.definition)?;
        let engine = self.engine.clone();
        let counted = blocking(move || Ok(engine.count_segment(&def, as_of)?)).await?;
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
        let (def, name) = self.target(&req.name, &req.definition)?;
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
        let (tx, rx) = mpsc::channel(EXPORT_AHEAD);
        tokio::spawn(run_export(
            self.engine.clone(),
            Arc::new(def),
            name,
            as_of,
            after,
            tx,
        ));
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
        let engine = self.engine.clone();
        let report = blocking(move || Ok(engine.funnel(range)?)).await?;
        Ok(Response::new(convert::funnel_response(report)))
    }
}
