"""conveyor_airflow."""
