// Command example uses a wfe-sqlite server from Go through stubs generated from protos/: it creates
// a workflow whose step waits for an event, publishes that event, reads both back, and tells a
// missing workflow apart by the reason in the error's google.rpc.ErrorInfo.
//
//	go run . [HOST:PORT]    # default 127.0.0.1:50051, where `make serve` listens
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	persistencev1 "github.com/wfe-sqlite/wfe-sqlite/examples/go/gen/wfe/persistence/v1"
)

// errorDomain is the ErrorInfo domain of every error the server returns.
const errorDomain = "wfe-sqlite"

func main() {
	log.SetFlags(0)
	address := "127.0.0.1:50051"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	if err := run(address); err != nil {
		log.Fatalf("example: %v", err)
	}
}

func run(address string) error {
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	workflows := persistencev1.NewWorkflowServiceClient(conn)
	events := persistencev1.NewEventServiceClient(conn)

	// Every call gets a deadline: a server that is not there fails the call instead of hanging.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A workflow whose first step waits for the event order.paid / 42. The empty id and name are
	// filled in by the server: a new UUID, and "order-flow-N" from the definition's sequence.
	// JSON values travel as JSON text.
	created, err := workflows.CreateWorkflow(ctx, &persistencev1.CreateWorkflowRequest{
		Workflow: &persistencev1.WorkflowInstance{
			WorkflowDefinitionId: "order-flow",
			Version:              1,
			Status:               persistencev1.WorkflowStatus_WORKFLOW_STATUS_RUNNABLE,
			Data:                 `{"order": 42}`,
			CreateTime:           timestamppb.Now(),
			ExecutionPointers: []*persistencev1.ExecutionPointer{{
				Id:        "step-0",
				Active:    true,
				Status:    persistencev1.PointerStatus_POINTER_STATUS_WAITING_FOR_EVENT,
				EventName: ptr("order.paid"),
				EventKey:  ptr("42"),
			}},
		},
	})
	if err != nil {
		return fmt.Errorf("CreateWorkflow: %w", err)
	}
	fmt.Printf("created workflow %s (id %s)\n", created.GetName(), created.GetId())

	// Someone publishes the event.
	published, err := events.CreateEvent(ctx, &persistencev1.CreateEventRequest{
		Event: &persistencev1.Event{
			EventName: "order.paid",
			EventKey:  "42",
			EventData: `{"amount": 99.5}`,
			EventTime: timestamppb.Now(),
		},
	})
	if err != nil {
		return fmt.Errorf("CreateEvent: %w", err)
	}
	fmt.Printf("published event order.paid/42 (id %s)\n", published.GetId())

	// Both read back.
	event, err := events.GetEvent(ctx, &persistencev1.GetEventRequest{Id: published.GetId()})
	if err != nil {
		return fmt.Errorf("GetEvent: %w", err)
	}
	e := event.GetEvent()
	fmt.Printf("read event %s/%s: data %s, processed %t\n", e.GetEventName(), e.GetEventKey(), e.GetEventData(), e.GetIsProcessed())

	workflow, err := workflows.GetWorkflow(ctx, &persistencev1.GetWorkflowRequest{Id: created.GetId()})
	if err != nil {
		return fmt.Errorf("GetWorkflow: %w", err)
	}
	w := workflow.GetWorkflow()
	if len(w.GetExecutionPointers()) != 1 {
		return fmt.Errorf("GetWorkflow: want the one execution pointer stored, got %d", len(w.GetExecutionPointers()))
	}
	step := w.GetExecutionPointers()[0]
	fmt.Printf("read workflow %s: %s, data %s, step 0 %s for %s/%s\n", w.GetName(), w.GetStatus(), w.GetData(),
		step.GetStatus(), step.GetEventName(), step.GetEventKey())

	// A missing workflow is NOT_FOUND with the reason WORKFLOW_NOT_FOUND in its ErrorInfo: branch on
	// the reason (compared with the generated ErrorReason name), never on the message text.
	_, err = workflows.GetWorkflow(ctx, &persistencev1.GetWorkflowRequest{Id: "no-such-workflow"})
	code, reason := reasonOf(err)
	want := persistencev1.ErrorReason_WORKFLOW_NOT_FOUND.String()
	if code != codes.NotFound || reason != want {
		return fmt.Errorf("GetWorkflow of a missing id: want NotFound, reason %s; got %v (reason %q)", want, err, reason)
	}
	fmt.Printf("GetWorkflow(no-such-workflow): %s, reason %s\n", code, reason)
	return nil
}

// reasonOf returns the status code of a failed call and the reason of its wfe-sqlite ErrorInfo
// ("" when the error carries none, for example when no server answered).
func reasonOf(err error) (codes.Code, string) {
	if err == nil {
		return codes.OK, ""
	}
	st, ok := status.FromError(err)
	if !ok {
		return codes.Unknown, ""
	}
	for _, detail := range st.Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return st.Code(), info.GetReason()
		}
	}
	return st.Code(), ""
}

func ptr[T any](v T) *T { return &v }
