//! Processes: deploy and versions, instances (state, active elements, variables, history,
//! incidents), incidents and retries, messages, the task list, the chat Actions menu settings,
//! starting a process from a chat. Cases.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json as Out, Router};
use ferrydesk_desk::cases::{CaseChange, CaseInput, CasePatch, CaseView};
use ferrydesk_domain::*;
use ferrydesk_engine::menu::{ChatActionSetting, ProcessRun};
use ferrydesk_engine::{
    Definition, DefinitionXml, Incident, InstanceQuery, InstanceSummary, InstanceView,
    MessageInput, StartInput, UserTask,
};
use ferrydesk_plugins::ActionInfo;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::chats::StartChatRequest;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Auth, Json, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/processes", get(definitions))
        .route("/processes/definitions/{id}", get(definition))
        .route("/processes/{key}/instances", post(start))
        .route("/process-instances", get(instances))
        .route("/process-instances/{id}", get(instance))
        .route("/process-instances/{id}/cancel", post(cancel))
        .route("/incidents", get(incidents))
        .route("/incidents/{id}/retry", post(retry))
        .route("/messages", post(publish))
        .route("/tasks", get(tasks))
        .route("/tasks/{id}", get(task))
        .route("/tasks/{id}/claim", post(claim))
        .route("/tasks/{id}/complete", post(complete))
        .route("/settings/chat-actions", get(get_menu).put(put_menu))
        .route("/chats/{id}/actions", get(chat_actions))
        .route("/chats/{id}/processes/{key}", post(start_from_chat))
        .route("/cases", get(list_cases).post(create_case))
        .route("/cases/{id}", get(get_case).patch(update_case))
        .route("/cases/{id}/chats", post(start_chat_from_case))
        .route("/cases/{id}/history", get(case_history))
}

/// Deploying takes the BPMN XML as the raw body (up to 4 MiB).
pub fn deploy_router() -> Router<AppState> {
    Router::new().route("/processes", post(deploy))
}

/// Every version of every deployed process, newest first within a process.
#[utoipa::path(get, path = "/api/v1/processes", operation_id = "list_processes", tag = "processes", responses((status = 200, body = Vec<Definition>), (status = 403, body = ErrorBody)))]
async fn definitions(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Vec<Definition>>> {
    Ok(Out(s.engine.definitions(&p).await?))
}

/// Deploys a BPMN 2.0 file as Camunda Modeler saves it (body: the XML). Each process in it
/// becomes a new version unless unchanged. Problems answer 422 naming the element id.
#[utoipa::path(post, path = "/api/v1/processes", operation_id = "deploy_process", tag = "processes", request_body(content = String, content_type = "application/xml"),
    responses((status = 201, body = Vec<Definition>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn deploy(
    State(s): State<AppState>,
    Auth(p): Auth,
    body: String,
) -> ApiResult<(StatusCode, Out<Vec<Definition>>)> {
    p.require(Role::Admin)?;
    Ok((
        StatusCode::CREATED,
        Out(s.engine.deploy(Some(p.id()), &body).await?),
    ))
}

/// A definition with its XML (for the diagram).
#[utoipa::path(get, path = "/api/v1/processes/definitions/{id}", operation_id = "get_process_definition", tag = "processes", responses((status = 200, body = DefinitionXml), (status = 404, body = ErrorBody)))]
async fn definition(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<DefinitionXml>> {
    Ok(Out(s.engine.definition_xml(&p, &id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    pub id: String,
}

/// Starts an instance of the newest version (admins).
#[utoipa::path(post, path = "/api/v1/processes/{key}/instances", operation_id = "start_process", tag = "processes", request_body = StartInput,
    responses((status = 201, body = Started), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn start(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(key): Path<String>,
    Json(input): Json<StartInput>,
) -> ApiResult<(StatusCode, Out<Started>)> {
    let id = s.engine.start_api(&p, &key, input).await?;
    Ok((StatusCode::CREATED, Out(Started { id })))
}

/// Instances, newest first. Operators list the instances of a chat they can read.
#[utoipa::path(get, path = "/api/v1/process-instances", operation_id = "list_process_instances", tag = "processes", params(InstanceQuery), responses((status = 200, body = Vec<InstanceSummary>)))]
async fn instances(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<InstanceQuery>,
) -> ApiResult<Out<Vec<InstanceSummary>>> {
    Ok(Out(s.engine.instances(&p, &q).await?))
}

/// An instance: where its tokens wait, its variables, history, incidents and user tasks.
#[utoipa::path(get, path = "/api/v1/process-instances/{id}", operation_id = "get_process_instance", tag = "processes", responses((status = 200, body = InstanceView), (status = 404, body = ErrorBody)))]
async fn instance(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<InstanceView>> {
    Ok(Out(s.engine.instance(&p, &id).await?))
}

/// Terminates an instance and the instances it called (admins).
#[utoipa::path(post, path = "/api/v1/process-instances/{id}/cancel", operation_id = "cancel_process_instance", tag = "processes", responses((status = 204), (status = 403, body = ErrorBody)))]
async fn cancel(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine.cancel_instance(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Open incidents: jobs that ran out of retries, called processes that are not deployed.
#[utoipa::path(get, path = "/api/v1/incidents", operation_id = "list_incidents", tag = "processes", responses((status = 200, body = Vec<Incident>)))]
async fn incidents(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Vec<Incident>>> {
    Ok(Out(s.engine.incidents(&p).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Attempts to give the job (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub retries: Option<i64>,
}

/// Retries an incident's job (admins).
#[utoipa::path(post, path = "/api/v1/incidents/{id}/retry", operation_id = "retry_incident", tag = "processes", request_body = RetryRequest,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<RetryRequest>,
) -> ApiResult<StatusCode> {
    s.engine
        .retry_incident(&p, &id, r.retries.unwrap_or(1))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    /// Instances that continued or started.
    pub instances: Vec<String>,
    /// The buffered message's id: nothing took the message and it has a time to live.
    pub buffered: Option<String>,
}

/// Publishes a message: waiting instances with the correlation key continue; processes with a
/// message start event of that name start (admins, API tokens). With `time_to_live_ms`, a
/// message nothing took is buffered for a subscription that opens within that time.
#[utoipa::path(post, path = "/api/v1/messages", operation_id = "publish_message", tag = "processes", request_body = MessageInput, responses((status = 200, body = Published)))]
async fn publish(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(m): Json<MessageInput>,
) -> ApiResult<Out<Published>> {
    let c = s.engine.publish_message(&p, m).await?;
    Ok(Out(Published {
        instances: c.instances,
        buffered: c.buffered,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskQuery {
    /// `open` (default), `completed` or `canceled`.
    #[param(pattern = "^(open|completed|canceled)$")]
    state: Option<String>,
}

/// The caller's task list.
#[utoipa::path(get, path = "/api/v1/tasks", operation_id = "list_tasks", tag = "processes", params(TaskQuery), responses((status = 200, body = Vec<UserTask>)))]
async fn tasks(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<TaskQuery>,
) -> ApiResult<Out<Vec<UserTask>>> {
    Ok(Out(s
        .engine
        .task_list(&p, q.state.as_deref().unwrap_or("open"))
        .await?))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", operation_id = "get_task", tag = "processes", responses((status = 200, body = UserTask), (status = 404, body = ErrorBody)))]
async fn task(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<UserTask>> {
    Ok(Out(s.engine.user_task(&p, &id).await?))
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/claim", operation_id = "claim_task", tag = "processes", responses((status = 200, body = UserTask), (status = 409, body = ErrorBody)))]
async fn claim(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<UserTask>> {
    Ok(Out(s.engine.claim_user_task(&p, &id).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteTaskRequest {
    /// The form's values, validated against its JSON Schema.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
}

/// Completes a user task with its form; the process continues.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", operation_id = "complete_task", tag = "processes", request_body = CompleteTaskRequest,
    responses((status = 200, body = UserTask), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn complete(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<CompleteTaskRequest>,
) -> ApiResult<Out<UserTask>> {
    Ok(Out(s
        .engine
        .complete_user_task(&p, &id, r.variables)
        .await?))
}

/// The chat Actions menu settings (admins).
#[utoipa::path(get, path = "/api/v1/settings/chat-actions", operation_id = "get_chat_action_settings", tag = "processes", responses((status = 200, body = Vec<ChatActionSetting>)))]
async fn get_menu(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<Out<Vec<ChatActionSetting>>> {
    Ok(Out(s.engine.chat_action_settings(&p).await?))
}

/// Replaces the chat Actions menu (admins); problems name `entries[i].field`.
#[utoipa::path(put, path = "/api/v1/settings/chat-actions", operation_id = "put_chat_action_settings", tag = "processes", request_body = Vec<ChatActionSetting>,
    responses((status = 200, body = Vec<ChatActionSetting>), (status = 422, body = ErrorBody)))]
async fn put_menu(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(entries): Json<Vec<ChatActionSetting>>,
) -> ApiResult<Out<Vec<ChatActionSetting>>> {
    Ok(Out(s.engine.set_chat_action_settings(&p, entries).await?))
}

/// The chat's Actions menu: processes and plugin actions, as the chat settings say.
#[utoipa::path(get, path = "/api/v1/chats/{id}/actions", tag = "plugins", responses((status = 200, body = Vec<ActionInfo>), (status = 404, body = ErrorBody)))]
async fn chat_actions(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Vec<ActionInfo>>> {
    Ok(Out(s.engine.chat_menu(&p, &ChatId(id)).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartFromChatRequest {
    /// Extra variables (the chat, contact and operator are always passed).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
}

/// Starts a process from the chat's Actions menu and answers once it settles (e.g. with the
/// case it created).
#[utoipa::path(post, path = "/api/v1/chats/{id}/processes/{key}", operation_id = "start_process_from_chat", tag = "processes", request_body = StartFromChatRequest,
    responses((status = 200, body = ProcessRun), (status = 404, body = ErrorBody)))]
async fn start_from_chat(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, key)): Path<(String, String)>,
    Json(r): Json<StartFromChatRequest>,
) -> ApiResult<Out<ProcessRun>> {
    Ok(Out(s
        .engine
        .start_from_chat(&p, &ChatId(id), &key, r.variables)
        .await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CaseQuery {
    status: Option<CaseStatus>,
    contact_id: Option<ContactId>,
    responsible_id: Option<UserId>,
    /// Subject words, or a case number.
    q: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CasePage {
    pub cases: Vec<Case>,
    pub total: i64,
}

#[utoipa::path(get, path = "/api/v1/cases", operation_id = "list_cases", tag = "cases", params(CaseQuery), responses((status = 200, body = CasePage)))]
async fn list_cases(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<CaseQuery>,
) -> ApiResult<Out<CasePage>> {
    let (cases, total) = s
        .desk
        .list_cases(
            &p,
            &ferrydesk_store::cases::CaseFilter {
                status: q.status,
                contact: q.contact_id,
                responsible: q.responsible_id,
                q: q.q,
                visible_to: None,
                limit: q.limit.unwrap_or(50),
                offset: q.offset.unwrap_or(0),
            },
        )
        .await?;
    Ok(Out(CasePage { cases, total }))
}

/// Creates a case by hand.
#[utoipa::path(post, path = "/api/v1/cases", operation_id = "create_case", tag = "cases", request_body = CaseInput,
    responses((status = 201, body = Case), (status = 422, body = ErrorBody)))]
async fn create_case(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(input): Json<CaseInput>,
) -> ApiResult<(StatusCode, Out<Case>)> {
    Ok((
        StatusCode::CREATED,
        Out(s.desk.create_case_as(&p, input).await?),
    ))
}

/// A case with its chats.
#[utoipa::path(get, path = "/api/v1/cases/{id}", operation_id = "get_case", tag = "cases", responses((status = 200, body = CaseView), (status = 404, body = ErrorBody)))]
async fn get_case(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<CaseView>> {
    Ok(Out(s.desk.case_view(&p, &CaseId(id)).await?))
}

/// Edits a case: supervisors and admins any case; an operator a case they are responsible for,
/// or one nobody is responsible for (see docs/api.md, "Cases"). Each changed field is recorded
/// in the case history.
#[utoipa::path(patch, path = "/api/v1/cases/{id}", operation_id = "update_case", tag = "cases", request_body = CasePatch,
    responses((status = 200, body = Case), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_case(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(patch): Json<CasePatch>,
) -> ApiResult<Out<Case>> {
    Ok(Out(s.desk.update_case(&p, &CaseId(id), patch).await?))
}

/// Who changed what on the case, oldest first (at most 1,000 entries).
#[utoipa::path(get, path = "/api/v1/cases/{id}/history", operation_id = "case_history", tag = "cases",
    responses((status = 200, body = Vec<CaseChange>), (status = 404, body = ErrorBody)))]
async fn case_history(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Vec<CaseChange>>> {
    Ok(Out(s.desk.case_history(&p, &CaseId(id)).await?))
}

/// Starts a chat with the case's contact, linked to the case (S22).
#[utoipa::path(post, path = "/api/v1/cases/{id}/chats", operation_id = "start_chat_from_case", tag = "cases", request_body = StartChatRequest,
    responses((status = 201, body = Chat), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn start_chat_from_case(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<StartChatRequest>,
) -> ApiResult<(StatusCode, Out<Chat>)> {
    let c = s
        .desk
        .start_chat_from_case(&p, &CaseId(id), r.identity_id.as_ref(), &r.text)
        .await?;
    Ok((StatusCode::CREATED, Out(c)))
}
