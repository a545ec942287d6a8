// bpmn-js with its styles, loaded on demand by BpmnDiagram so that the operator's bundle
// stays small.
import "bpmn-js/dist/assets/diagram-js.css";
import "bpmn-js/dist/assets/bpmn-js.css";
import "./bpmn.css";

export { default as NavigatedViewer } from "bpmn-js/lib/NavigatedViewer";
